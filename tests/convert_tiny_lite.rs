//! Converting the bundled tiny-lite model (bf16, DeepSeek-V2-Lite shape) and reading it back.

use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::inspect::{inspect, verify};
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy, Weight};

fn tiny_lite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite")
}

fn convert_with(opts: &ConvertOptions, out: &Path) -> tquant::convert::ConvertSummary {
    tquant::convert::convert(&tiny_lite(), out, opts, &RunOptions::default(), &NoProgress)
        .expect("tiny-lite converts")
}

#[test]
fn default_conversion_quantizes_decoder_matrices_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let summary = convert_with(&ConvertOptions::default(), &out);
    // 3 layers: attention (4 matrices each), layer 0 dense MLP (3), layers 1-2: 8 experts x 3
    // + shared experts (3) in sf4; embeddings and lm_head in q8_0; routers and norms kept.
    assert_eq!(summary.quantized, 3 * 4 + 3 + 2 * (8 * 3 + 3) + 2);
    assert_eq!(summary.q8_0, 2);
    assert_eq!(summary.skipped, 0);

    let original = Checkpoint::open(tiny_lite()).unwrap();
    let q = Checkpoint::open(&out).unwrap();
    let names: Vec<&str> = original.names().collect();
    assert_eq!(
        q.names().collect::<Vec<_>>(),
        names,
        "logical names survive"
    );
    assert!(matches!(
        q.get("model.layers.1.mlp.gate.weight").unwrap(),
        Weight::Dense(_)
    ));
    for q8 in ["model.embed_tokens.weight", "lm_head.weight"] {
        let Weight::Quantized(v) = q.get(q8).unwrap() else {
            panic!("{q8} is not quantized")
        };
        assert!(v.info.is_q8_0(), "{q8}: {}", v.info.format);
        assert_eq!(v.info.bits_per_weight(), 8.5);
    }
    let cfg = q.config().expect("config.json copied");
    assert_eq!(cfg["quantization_config"]["quant_method"], "tquant");
    assert_eq!(cfg["model_type"], "deepseek_v2");

    let report = verify(&original, &q).unwrap();
    assert_eq!(report.tensors.len(), summary.quantized);
    assert!(report.kept_different.is_empty());
    assert_eq!(report.kept_identical, 12);
    for t in report.tensors.iter().filter(|t| t.format == "q8_0") {
        // 8-bit codes with an f16 scale per 32: about 3e-5.
        assert!(t.nmse > 0.0 && t.nmse < 1e-4, "{}: nmse {}", t.name, t.nmse);
        assert_eq!(t.bits_per_weight, 8.5);
    }
    for t in report.tensors.iter().filter(|t| t.format != "q8_0") {
        // Round-to-nearest 4-bit with per-64 absmax scales on near-normal weights: about 0.0085.
        assert!(
            t.nmse > 0.004 && t.nmse < 0.012,
            "{}: nmse {}",
            t.name,
            t.nmse
        );
        assert!(
            t.format.starts_with("sf4:nu=") || t.format == "sf4",
            "{}",
            t.format
        );
    }

    let info = inspect(&q).unwrap();
    let qproj = info
        .tensors
        .iter()
        .find(|t| t.name == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(qproj.block, Some(64));
    assert_eq!(qproj.scale_dtype.as_deref(), Some("f16"));
    assert!((qproj.bits_per_weight - 4.25).abs() < 1e-9);
    assert!(qproj
        .nu
        .as_f64()
        .is_some_and(|nu| (0.5..=1000.0).contains(&nu)));
}

#[test]
fn matrix_view_matches_dequantized_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let opts = ConvertOptions::from_args(
        Some("nf4"),
        None,
        Some("32"),
        Some("bf16"),
        Layout::Tquant,
        Policy::default(),
    )
    .unwrap();
    convert_with(&opts, &out);
    let q = Checkpoint::open(&out).unwrap();
    let Weight::Quantized(v) = q.get("model.layers.0.self_attn.kv_b_proj.weight").unwrap() else {
        panic!("kv_b_proj is quantized");
    };
    let m = v.matrix(0).unwrap();
    assert_eq!((m.rows, m.cols, m.block), (384, 48, 32));
    assert_eq!(m.codes.len(), 384 * 24);
    assert_eq!(m.scales.len(), 384 * 2 * 2);
    assert_eq!(m.table, tquant::formats::catalog::NF4);
    // Element (r, c) from the raw parts equals the dequantized value.
    let d = v.dequantize().unwrap();
    for (r, c) in [(0, 0), (5, 33), (383, 47)] {
        let code = tquant::formats::pack::code_at(&m.codes[r * 24..], c);
        let s = m.scale_dtype.read(m.scales, r * 2 + c / 32);
        assert_eq!(d[r * 48 + c], m.table[code as usize] * s);
    }
}

#[test]
fn existing_output_is_refused_without_force_and_replaced_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("marker"), b"old").unwrap();
    let opts = ConvertOptions::from_args(
        Some("int4"),
        None,
        None,
        None,
        Layout::Tquant,
        Policy::default(),
    )
    .unwrap();
    let err = tquant::convert::convert(
        &tiny_lite(),
        &out,
        &opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    // The library names no flag (the command line adds "pass --force", tests/hostile_output.rs).
    assert!(
        matches!(&err, tquant::convert::ConvertError::OutputExists { path } if path == &out),
        "{err}"
    );
    assert!(err.to_string().contains("output exists"), "{err}");
    assert!(out.join("marker").exists());
    let run = RunOptions {
        force: true,
        threads: Some(1),
    };
    // The marker is not tquant's: --force refuses to delete it.
    let err = tquant::convert::convert(&tiny_lite(), &out, &opts, &run, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("marker"), "{err}");
    assert!(out.join("marker").exists());
    // A previous tquant output is replaced.
    std::fs::remove_dir_all(&out).unwrap();
    tquant::convert::convert(
        &tiny_lite(),
        &out,
        &opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    tquant::convert::convert(&tiny_lite(), &out, &opts, &run, &NoProgress).unwrap();
    assert!(out.join("model.safetensors").exists());
    // Only the output is left: no temporary or old directories.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn nu_search_is_no_worse_than_the_fit_overall() {
    let tmp = tempfile::tempdir().unwrap();
    let original = Checkpoint::open(tiny_lite()).unwrap();
    let mut total = Vec::new();
    for nu in ["fit", "search"] {
        let out = tmp.path().join(nu);
        let opts = ConvertOptions::from_args(
            None,
            Some(nu),
            None,
            None,
            Layout::Tquant,
            Policy::default(),
        )
        .unwrap();
        convert_with(&opts, &out);
        let q = Checkpoint::open(&out).unwrap();
        assert_eq!(q.config().unwrap()["quantization_config"]["nu"], nu);
        let info = q
            .quant_info("model.layers.2.mlp.experts.3.up_proj.weight")
            .unwrap();
        assert!(info.matrices[0].fit_tensor.is_some());
        assert_eq!(info.matrices[0].fit.is_some(), nu == "fit");
        total.push(verify(&original, &q).unwrap().nmse);
    }
    assert!(
        total[1] <= total[0],
        "search {} vs fit {}",
        total[1],
        total[0]
    );
}
