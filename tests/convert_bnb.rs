//! `--layout bnb` against what bitsandbytes 0.50 + transformers 5.24 wrote for the same model
//! (tests/data/convert/bnb_nf4, made by scripts/fixtures/bnb_nf4.py): byte for byte.

use std::path::PathBuf;
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy, Weight};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
    let theirs = Checkpoint::open(fixture()).unwrap();
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
