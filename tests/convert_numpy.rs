//! scripts/dequantize.py (numpy only, no tquant) must dequantize every tensor of a converted
//! checkpoint to exactly tquant's values. Needs `$TQUANT_PYTHON` (default `python3`) with numpy
//! and safetensors: without them the test fails under CI and is skipped, loudly, elsewhere.

use crate::convert_support;
use crate::support::tools::require_python;

use std::path::{Path, PathBuf};
use std::process::Command;
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Converts, runs the numpy reader on every tensor, and compares bit for bit with tquant's
/// own dequantization. Returns how many tensors were quantized.
fn check(py: &Path, input: &Path, opts: &ConvertOptions, work: &Path) -> usize {
    let out = work.join("q");
    tquant::convert::convert(input, &out, opts, &RunOptions::default(), &NoProgress).unwrap();
    let npy = work.join("numpy.safetensors");
    let status = Command::new(py)
        .arg(root().join("scripts/dequantize.py"))
        .arg(&out)
        .arg("-o")
        .arg(&npy)
        .status()
        .unwrap();
    assert!(status.success(), "dequantize.py failed");
    let ours = Checkpoint::open(&out).unwrap();
    let theirs = Checkpoint::open(&npy).unwrap();
    assert_eq!(
        theirs.names().collect::<Vec<_>>(),
        ours.names().collect::<Vec<_>>()
    );
    let mut quantized = 0;
    for name in ours.names() {
        let w = ours.get(name).unwrap();
        quantized += matches!(w, tquant::convert::Weight::Quantized(_)) as usize;
        let a = w.to_f32().unwrap();
        let b = theirs.get(name).unwrap().to_f32().unwrap();
        assert_eq!(a.len(), b.len(), "{name}");
        let differ = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} values differ from the numpy reader"
        );
    }
    assert!(quantized > 0);
    std::fs::remove_dir_all(&out).unwrap();
    quantized
}

fn opts(format: &str, block: &str, scale: &str, layout: Layout) -> ConvertOptions {
    ConvertOptions::from_args(
        Some(format),
        None,
        Some(block),
        Some(scale),
        layout,
        Policy::default(),
    )
    .unwrap()
}

#[test]
fn numpy_reader_matches_tquant_exactly() {
    let Some(py) = require_python(
        "numpy_reader_matches_tquant_exactly",
        &["numpy", "safetensors"],
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tiny = root().join("examples/tiny-lite");
    check(&py, &tiny, &ConvertOptions::default(), tmp.path());
    check(
        &py,
        &tiny,
        &opts("sf3", "row", "bf16", Layout::Tquant),
        tmp.path(),
    );
    check(
        &py,
        &tiny,
        &opts("int4_full", "16", "f32", Layout::Tquant),
        tmp.path(),
    );
    let moe = tmp.path().join("moe");
    convert_support::write_checkpoint(
        &moe,
        &convert_support::moe_model(true, 7),
        &convert_support::moe_config(),
    );
    check(
        &py,
        &moe,
        &opts("e2m1", "32", "e8m0", Layout::Tquant),
        tmp.path(),
    );
    check(&py, &moe, &ConvertOptions::default(), tmp.path());
    // A table per row (`.row_tables`), on fused experts too.
    let row_tables = ConvertOptions::builder()
        .format(tquant::convert::FormatChoice::LearnedRow)
        .build()
        .unwrap();
    check(&py, &moe, &row_tables, tmp.path());
    // The other layouts are read from their own conventions.
    check(
        &py,
        &tiny,
        &opts("nf4", "64", "f32", Layout::Bnb),
        tmp.path(),
    );
    let mx = root().join("tests/data/convert/mxfp4/input.safetensors");
    check(
        &py,
        &mx,
        &opts("e2m1", "32", "e8m0", Layout::Mxfp4),
        tmp.path(),
    );
}
