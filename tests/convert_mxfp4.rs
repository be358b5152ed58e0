//! `--layout mxfp4` (OCP MXFP4 as Hugging Face stores it): tquant still writes the bytes in
//! tests/data/convert/mxfp4/model.safetensors, and they dequantize (through tquant's reader and
//! through the kernel view) to exactly what transformers' MXFP4 code gave for them
//! (reference.safetensors, made by scripts/fixtures/mxfp4.py).

use std::path::PathBuf;
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::inspect::inspect;
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy, Weight};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/mxfp4")
}

fn mxfp4() -> ConvertOptions {
    ConvertOptions::from_args(None, None, None, None, Layout::Mxfp4, Policy::default()).unwrap()
}

#[test]
fn mxfp4_output_is_unchanged_and_reads_back_like_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    tquant::convert::convert(
        &data().join("input.safetensors"),
        &out,
        &mxfp4(),
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let ours = Checkpoint::open(&out).unwrap();
    let committed = Checkpoint::open(data().join("model.safetensors")).unwrap();
    assert_eq!(ours.raw_names().count(), committed.raw_names().count());
    for name in committed.raw_names() {
        let (a, b) = (committed.raw(name).unwrap(), ours.raw(name).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{name}");
        assert!(a.bytes == b.bytes, "{name}: bytes changed");
    }
    assert_eq!(
        ours.config().unwrap()["quantization_config"]["quant_method"],
        "mxfp4"
    );

    let reference = Checkpoint::open(data().join("reference.safetensors")).unwrap();
    let mut checked = 0;
    for name in reference.names() {
        let Weight::Quantized(q) = ours.get(name).unwrap() else {
            panic!("{name} is read as MXFP4")
        };
        assert_eq!(q.info.layout, Layout::Mxfp4);
        assert_eq!(q.shape(), reference.raw(name).unwrap().shape);
        let want = reference.get(name).unwrap().to_f32().unwrap();
        let got = q.dequantize().unwrap();
        // MXFP4 values are exact in bf16, transformers' output dtype.
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "{name}: {differ} values differ from transformers'"
        );
        // The kernel view reads the same bytes as tquant's own layout (e2m1 table, 32, e8m0).
        let m = q.matrix(q.experts() - 1).unwrap();
        assert_eq!((m.block, m.table.len()), (32, 16));
        checked += 1;
    }
    assert_eq!(checked, 2);
    let report = inspect(&ours).unwrap();
    assert!(report
        .tensors
        .iter()
        .any(|t| t.layout.as_deref() == Some("mxfp4")));
}

#[test]
fn mxfp4_refuses_rows_that_are_not_whole_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite");
    let err = tquant::convert::convert(
        &tiny,
        &tmp.path().join("q"),
        &mxfp4(),
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    // kv_b_proj has rows of 48 elements.
    assert!(
        err.contains("kv_b_proj") && err.contains("multiple of 32"),
        "{err}"
    );
    let opts = ConvertOptions::from_args(
        None,
        None,
        None,
        None,
        Layout::Mxfp4,
        Policy {
            include: vec![],
            exclude: vec!["*.kv_b_proj.weight".into()],
            ..Policy::default()
        },
    )
    .unwrap();
    tquant::convert::convert(
        &tiny,
        &tmp.path().join("q"),
        &opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
}
