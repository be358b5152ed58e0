//! Bits per byte of the trained tiny-lite model: float weights against transformers' figure
//! (scripts/fixtures/deepseek_reference.py), and weights quantized in memory (RTN, block 64)
//! against the independent numpy + transformers reference of scripts/fixtures/report_reference.py.

use std::path::{Path, PathBuf};
use tquant::formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
use tquant::model::eval::bits_per_byte;
use tquant::model::weights::rtn_decoder_matrices;
use tquant::model::{Model, ModelError, Options, QuantTensor};

const WINDOW: usize = 256;
const MAX_BYTES: usize = 65792;
/// The brief's bar for reproducing a bits-per-byte figure.
const BPB_TOLERANCE: f64 = 1e-3;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_lite() -> PathBuf {
    root().join("examples/tiny-lite")
}

/// The first 65792 bytes of the held-out text the reference figures were measured on.
fn heldout() -> Vec<u8> {
    std::fs::read(root().join("tests/data/model/heldout_head.txt")).unwrap()
}

fn json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
}

/// RTN of every matrix inside the decoder layers except the router, as the reference does.
fn rtn(
    format: &str,
) -> impl Fn(&str, &[usize], &[f32]) -> Result<Option<QuantTensor>, ModelError> + Sync {
    let quantizer = BlockQuantizer {
        block: BlockSize::Elements(64),
        scale_dtype: ScaleDtype::F32,
    };
    rtn_decoder_matrices(format.parse::<Format>().unwrap(), quantizer)
}

#[test]
fn tiny_lite_f32_bits_per_byte_matches_transformers() {
    let want = json("tests/data/model/tiny_lite_bpb.json")["bits_per_byte"]
        .as_f64()
        .unwrap();
    let model = Model::open(&tiny_lite(), Options::default()).unwrap();
    let s = bits_per_byte(&model, &heldout(), WINDOW, MAX_BYTES).unwrap();
    assert_eq!(s.tokens, 65536);
    let got = s.bits_per_token();
    eprintln!("exact mode: {got} bits per byte (transformers, f32: {want})");
    assert!((got - want).abs() < BPB_TOLERANCE, "{got} vs {want}");
}

/// tiny-lite is bf16 on disk: the default (exact) mode above widens its weights in registers;
/// fast mode rounds activations to bf16 for `vdpbf16ps`, which moves bits per byte a little.
#[test]
fn tiny_lite_fast_mode_bits_per_byte_stays_near_exact() {
    let want = json("tests/data/model/tiny_lite_bpb.json")["bits_per_byte"]
        .as_f64()
        .unwrap();
    let opts = Options {
        mode: tquant::model::Mode::Fast,
        ..Options::default()
    };
    let model = Model::open(&tiny_lite(), opts).unwrap();
    let got = bits_per_byte(&model, &heldout(), WINDOW, MAX_BYTES)
        .unwrap()
        .bits_per_token();
    eprintln!("fast mode: {got} bits per byte (transformers, f32: {want})");
    assert!((got - want).abs() < FAST_BPB_TOLERANCE, "{got} vs {want}");
}

/// Fast mode's bar, the same as exact mode's: measured 5e-6 from transformers' figure.
const FAST_BPB_TOLERANCE: f64 = BPB_TOLERANCE;

#[test]
fn nf4_in_memory_matches_the_numpy_reference() {
    let reference = json("tests/data/report/reference.json");
    let row = reference["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["format"] == "nf4")
        .unwrap();
    let want = row["bits_per_byte"].as_f64().unwrap();
    let f32_bpb = reference["bits_per_byte_f32"].as_f64().unwrap();
    let model = Model::open_quantized(&tiny_lite(), Options::default(), rtn("nf4")).unwrap();
    assert!(model.is_quantized());
    let got = bits_per_byte(&model, &heldout(), WINDOW, MAX_BYTES)
        .unwrap()
        .bits_per_token();
    assert!((got - want).abs() < BPB_TOLERANCE, "{got} vs {want}");
    // Plausible: a few hundredths of a bit above the float model.
    assert!(
        got - f32_bpb > 0.02 && got - f32_bpb < 0.1,
        "{got} vs f32 {f32_bpb}"
    );
}
