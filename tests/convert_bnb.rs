//! `--layout bnb` against what bitsandbytes 0.50 + transformers 5.24 wrote for the same model
//! (tests/data/convert/bnb_nf4, made by scripts/fixtures/bnb_nf4.py): byte for byte. The reader
//! also takes bitsandbytes' double-quantized absmax (tests/data/convert/bnb_nf4_nested, made by
//! the same script with --nested).

use crate::support;

use std::path::PathBuf;
use support::root;
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy, Weight};

fn fixture() -> PathBuf {
    root().join("tests/data/convert/bnb_nf4")
}

#[test]
fn bnb_layout_matches_bitsandbytes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let opts =
        ConvertOptions::from_args(None, None, None, None, Layout::Bnb, Policy::default()).unwrap();
    assert_eq!(opts.format.name(), "nf4");
    tquant::convert::convert(
        &root().join("examples/tiny-lite"),
        &out,
        &opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let ours = Checkpoint::open(&out).unwrap();
    let theirs = Checkpoint::open(fixture()).unwrap();
    let mut compared = 0;
    for name in theirs.raw_names().filter(|n| !n.ends_with(".dequantized")) {
        let (a, b) = (theirs.raw(name).unwrap(), ours.raw(name).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{name}");
        assert!(
            a.bytes == b.bytes,
            "{name}: bytes differ from bitsandbytes'"
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        5 * 4,
        "codes, absmax, quant_map and quant_state of five weights"
    );

    let config = |c: &Checkpoint| c.config().unwrap()["quantization_config"].clone();
    assert_eq!(config(&ours), config(&theirs));
    // Every weight bitsandbytes quantized, we quantized too (we also quantize routed experts).
    let source: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("source.json")).unwrap())
            .unwrap();
    for name in source["quantized_by_bitsandbytes"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            matches!(ours.get(name).unwrap(), Weight::Quantized(_)),
            "{name}"
        );
    }
}

#[test]
fn reader_dequantizes_bnb_like_bitsandbytes() {
    assert_dequantizes_like_bitsandbytes(&fixture());
}

#[test]
fn reader_dequantizes_double_quantized_bnb_like_bitsandbytes() {
    let nested = root().join("tests/data/convert/bnb_nf4_nested");
    assert_dequantizes_like_bitsandbytes(&nested);
    let ckpt = Checkpoint::open(&nested).unwrap();
    let plain = Checkpoint::open(fixture()).unwrap();
    let name = "model.layers.0.self_attn.o_proj.weight";
    let (q, p) = (
        ckpt.quant_info(name).unwrap(),
        plain.quant_info(name).unwrap(),
    );
    // 192 x 192 in blocks of 64: 576 absmax, one byte each plus an f32 per 256 of them,
    // instead of an f32 each.
    assert_eq!(q.nested_absmax_block, Some(256));
    let codes = 192.0 * 192.0 / 2.0;
    assert_eq!(
        q.bits_per_weight(),
        (codes + 576.0 + 3.0 * 4.0) * 8.0 / (192.0 * 192.0)
    );
    assert_eq!(
        p.bits_per_weight(),
        (codes + 576.0 * 4.0) * 8.0 / (192.0 * 192.0)
    );
    // The codes are the same as without double quantization; only the absmax moved a little.
    let (Weight::Quantized(a), Weight::Quantized(b)) =
        (ckpt.get(name).unwrap(), plain.get(name).unwrap())
    else {
        panic!("both are quantized")
    };
    assert_eq!(a.codes, b.codes);
    let (x, y) = (a.dequantize().unwrap(), b.dequantize().unwrap());
    let rel = x
        .iter()
        .zip(&y)
        .map(|(u, v)| ((u - v).abs() / v.abs().max(1e-6)) as f64)
        .fold(0.0, f64::max);
    assert!(rel > 0.0 && rel < 0.02, "{rel}");
    // inspect and the model loader take it (the model holds bnb tensors as f32).
    support::stdout_ok(&["inspect", support::path(&nested), "--json"]);
}

fn assert_dequantizes_like_bitsandbytes(dir: &std::path::Path) {
    let theirs = Checkpoint::open(dir).unwrap();
    for name in [
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.kv_b_proj.weight",
    ] {
        let Weight::Quantized(q) = theirs.get(name).unwrap() else {
            panic!("the fixture's {name} is read as a quantized bnb tensor")
        };
        assert_eq!(q.info.layout, Layout::Bnb);
        assert!(
            q.matrix(0).is_none(),
            "bnb's flattened layout is not a kernel matrix"
        );
        let ours = q.dequantize().unwrap();
        let bnb = theirs
            .raw(&format!("{name}.dequantized"))
            .unwrap()
            .to_f32()
            .unwrap();
        assert_eq!(ours.len(), bnb.len());
        // bitsandbytes returns the original dtype (bf16): compare after the same rounding.
        let differ = ours
            .iter()
            .zip(&bnb)
            .filter(|(a, b)| half::bf16::from_f32(**a).to_f32() != **b)
            .count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} values differ from bitsandbytes'"
        );
    }
}
