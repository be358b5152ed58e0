//! The one-call APIs on the bundled tiny-lite model: convert with a recipe (and with GPTQ from a
//! calibration text), a model quantized in memory, and a weights-only report's JSON.

use std::path::{Path, PathBuf};
use tquant_convert::QuantizedView;
use tquant_report::{
    open_quantized, quantize_checkpoint, CalibrationOptions, CalibrationSource, QuantizeOptions,
    Recipe, Report, ReportError, Setting,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tiny_lite() -> PathBuf {
    root().join("examples/tiny-lite")
}

#[test]
fn quantize_checkpoint_converts_with_a_recipe_and_with_gptq() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nf4");
    let s = quantize_checkpoint(
        &tiny_lite(),
        &out,
        &QuantizeOptions::new("nf4".parse().unwrap()),
    )
    .unwrap();
    assert_eq!(s.format, "nf4");
    assert!(s.quantized > 0);
    assert!(tquant_model::checkpoint_source(&out)
        .unwrap()
        .checkpoint()
        .is_quantized());

    // GPTQ without calibration is refused, naming the recipe.
    let gptq: Recipe = "gptq:nf4".parse().unwrap();
    let e = quantize_checkpoint(
        &tiny_lite(),
        &dir.path().join("g"),
        &QuantizeOptions::new(gptq.clone()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("gptq:nf4"), "{e}");

    let mut opts = QuantizeOptions::new(gptq);
    opts.calibration = Some(CalibrationOptions::new(CalibrationSource::Text {
        path: root().join("tests/data/model/heldout_head.txt"),
        offset: 0,
        len: Some(3000),
    }));
    let g = dir.path().join("gptq");
    quantize_checkpoint(&tiny_lite(), &g, &opts).unwrap();
    // Same format, other codes: the calibration changed the rounding.
    let read = |p: &Path| {
        let src = tquant_model::checkpoint_source(p).unwrap();
        let ckpt = src.checkpoint();
        let names: Vec<String> = ckpt.names().map(str::to_string).collect();
        let mut codes = Vec::new();
        for name in names {
            if let tquant_convert::Weight::Quantized(q) = ckpt.get(&name).unwrap() {
                let q: QuantizedView = q;
                codes.extend_from_slice(q.codes);
            }
        }
        assert!(!codes.is_empty());
        codes
    };
    assert_ne!(read(&out), read(&g));

    // A calibration file with nothing after the offset is a typed error.
    opts.calibration = Some(CalibrationOptions::new(CalibrationSource::Text {
        path: root().join("tests/data/model/heldout_head.txt"),
        offset: usize::MAX,
        len: None,
    }));
    let e = quantize_checkpoint(&tiny_lite(), &dir.path().join("e"), &opts).unwrap_err();
    assert!(matches!(e, ReportError::EmptyWindow { .. }), "{e}");
}

#[test]
fn open_quantized_runs_a_recipe_in_memory_and_refuses_gptq() {
    let m = open_quantized(
        &tiny_lite(),
        &"int4".parse().unwrap(),
        &Setting::default(),
        Default::default(),
    )
    .unwrap();
    let ids: Vec<u32> = b"hello there".iter().map(|&b| u32::from(b)).collect();
    let s = tquant_model::eval::score_windows(&m, &ids, 10, usize::MAX).unwrap();
    assert!(s.bits.is_finite() && s.tokens == 10);
    let e = open_quantized(
        &tiny_lite(),
        &"gptq:int4".parse().unwrap(),
        &Setting::default(),
        Default::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("GPTQ"), "{e}");
}

#[test]
fn weights_only_report_json_carries_the_schema_version_and_rows() {
    let recipes: Vec<Recipe> = ["nf4", "int4"].iter().map(|r| r.parse().unwrap()).collect();
    let r = Report::weights_only(&tiny_lite(), &recipes, &Setting::default()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.json().unwrap()).unwrap();
    assert_eq!(v["schema_version"], tquant_report::SCHEMA_VERSION);
    let names: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["format"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nf4", "int4"]);
    assert!(r.summary_table().contains("| int4 | "));
}
