//! The embeddings and lm_head as q8_0 in tquant's layout (the default), against
//! `--keep-as source`, `--include`, `--exclude` and the other layouts.

use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::inspect::{inspect, verify};
use tquant::convert::{
    Checkpoint, ConvertError, ConvertOptions, ConvertSummary, KeepAs, Layout, Policy, Weight,
};
use tquant::formats::q8_0::Q8Matrix;

const Q8_NAMES: [&str; 2] = ["model.embed_tokens.weight", "lm_head.weight"];

fn tiny_lite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite")
}

fn convert(opts: &ConvertOptions, out: &Path) -> ConvertSummary {
    tquant::convert::convert(&tiny_lite(), out, opts, &RunOptions::default(), &NoProgress)
        .expect("tiny-lite converts")
}

fn with_policy(policy: Policy) -> ConvertOptions {
    ConvertOptions::builder().policy(policy).build().unwrap()
}

/// The stored codes and scales are ggml's Q8_0 of the source values, bit for bit; the other
/// tensors are those of `--keep-as source`, and the sizes add up to 8.5 bits per weight.
#[test]
fn embeddings_and_head_are_ggml_q8_0_of_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (q8, src) = (tmp.path().join("q8"), tmp.path().join("src"));
    let a = convert(&ConvertOptions::default(), &q8);
    let source = ConvertOptions::builder()
        .keep_as(KeepAs::Source)
        .build()
        .unwrap();
    let b = convert(&source, &src);
    assert_eq!((a.quantized, a.q8_0, a.kept), (71, 2, 12));
    assert_eq!((b.quantized, b.q8_0, b.kept), (69, 0, 14));
    let text = a.to_string();
    assert!(
        text.contains("83 tensors: 71 quantized (2 as q8_0), 12 kept"),
        "{text}"
    );
    // [256, 192] bf16 (2 bytes a weight) becomes 1 byte a weight plus 6 f16 scales a row.
    let per = 256 * 192 * 2 - (256 * 192 + 256 * 6 * 2);
    assert_eq!(a.output_bytes, b.output_bytes - 2 * per as u64);
    assert_eq!(a.params, b.params);
    assert_eq!(a.params_quantized, b.params_quantized + 2 * 256 * 192);
    for t in a
        .tensors
        .iter()
        .filter(|t| Q8_NAMES.contains(&t.name.as_str()))
    {
        assert_eq!(
            (t.action.as_str(), t.format.as_deref()),
            ("quantize", Some("q8_0"))
        );
        assert_eq!(t.bits_per_weight, 8.5);
    }

    let (orig, q, s) = (
        Checkpoint::open(tiny_lite()).unwrap(),
        Checkpoint::open(&q8).unwrap(),
        Checkpoint::open(&src).unwrap(),
    );
    for name in Q8_NAMES {
        let values = orig.get(name).unwrap().to_f32().unwrap();
        let want = Q8Matrix::quantize(&values, 256, 192).unwrap();
        let codes = q.raw(&format!("{name}.codes")).unwrap();
        let scales = q.raw(&format!("{name}.scales")).unwrap();
        assert_eq!(codes.dtype, tquant::convert::Dtype::I8);
        assert_eq!(codes.bytes, want.code_bytes().as_slice(), "{name}");
        assert_eq!(scales.bytes, want.scale_bytes().as_slice(), "{name}");
        let Weight::Quantized(v) = q.get(name).unwrap() else {
            panic!("{name} is not quantized")
        };
        assert_eq!(v.dequantize().unwrap(), want.dequantize(), "{name}");
        let m = v.q8_matrix(0).unwrap();
        assert_eq!((m.rows(), m.cols()), (256, 192));
        assert!(v.qmatrix(0).unwrap_err().to_string().contains("q8_0"));
        assert!(matches!(s.get(name).unwrap(), Weight::Dense(_)), "{name}");
    }
    // Everything else is the same bytes.
    for name in s.raw_names() {
        if Q8_NAMES.iter().all(|n| !name.starts_with(n)) {
            assert_eq!(
                q.raw(name).unwrap().bytes,
                s.raw(name).unwrap().bytes,
                "{name}"
            );
        }
    }
    let config = q.config().unwrap();
    assert_eq!(config["quantization_config"]["keep_as"], "q8_0");
    assert_eq!(
        s.config().unwrap()["quantization_config"]["keep_as"],
        "source"
    );

    let info = inspect(&q).unwrap();
    assert_eq!((info.quantized, info.q8_0, info.kept), (71, 2, 12));
    let head = info
        .tensors
        .iter()
        .find(|t| t.name == "lm_head.weight")
        .unwrap();
    assert_eq!((head.format.as_str(), head.block), ("q8_0", Some(32)));
    assert_eq!(head.scale_dtype.as_deref(), Some("f16"));
    assert_eq!(head.stored_bytes, 256 * 192 + 256 * 6 * 2);
    assert!(info
        .to_string()
        .contains("(71 quantized (2 as q8_0), 12 kept)"));
    let report = verify(&orig, &q).unwrap();
    assert_eq!(report.tensors.len(), 71);
    assert!(report.kept_different.is_empty());
}

#[test]
fn include_and_exclude_still_win_over_q8_0() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let summary = convert(
        &with_policy(Policy {
            include: vec!["lm_head.weight".into()],
            exclude: vec!["model.embed_tokens.weight".into()],
            ..Policy::default()
        }),
        &out,
    );
    assert_eq!((summary.quantized, summary.q8_0), (70, 0));
    let q = Checkpoint::open(&out).unwrap();
    let head = q.quant_info("lm_head.weight").unwrap();
    assert!(head.format.starts_with("sf4"), "{}", head.format);
    assert!(matches!(
        q.get("model.embed_tokens.weight").unwrap(),
        Weight::Dense(_)
    ));
}

#[test]
fn other_layouts_keep_embeddings_at_source_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bnb");
    let bnb = ConvertOptions::builder()
        .layout(Layout::Bnb)
        .build()
        .unwrap();
    assert_eq!(bnb.keep_as(), KeepAs::Source);
    let summary = convert(&bnb, &out);
    assert_eq!((summary.quantized, summary.q8_0), (69, 0));
    let err = ConvertOptions::builder()
        .layout(Layout::Mxfp4)
        .keep_as(KeepAs::Q8_0)
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        ConvertError::KeepAsLayout {
            layout: Layout::Mxfp4
        }
    ));
    assert!(err.to_string().contains("needs layout tquant"), "{err}");
    // A default built for tquant and then moved to another layout keeps the embeddings too.
    let moved = ConvertOptions {
        layout: Layout::Mxfp4,
        ..ConvertOptions::default()
    };
    assert_eq!(moved.keep_as(), KeepAs::Source);
}

#[test]
fn keep_as_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = tmp.path().join(format!("o{}", extra.len()));
        std::process::Command::new(env!("CARGO_BIN_EXE_tquant"))
            .arg("convert")
            .arg(tiny_lite())
            .arg("-o")
            .arg(&out)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--keep-as", "source", "--format", "int4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s["quantized"].as_u64(), s["q8_0"].as_u64()),
        (Some(69), Some(0))
    );
    let o = run(&["--keep-as", "q8_0", "--layout", "bnb", "--format", "nf4"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--keep-as q8_0 needs --layout tquant"),
        "{err}"
    );
    let o = run(&["--keep-as", "q4"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("q8_0, source"));
}
