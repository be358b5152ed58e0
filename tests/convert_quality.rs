//! `tquant convert --quality fast | balanced | best` and the default it gives `tquant convert`:
//! each preset's recipe, and explicit settings that replace a preset's part
//! (tquant_convert::Quality holds the recipes); `--keep-as head-q8_0`, the embeddings in 4 bits
//! with the output head as q8_0.

use crate::support;

use std::path::Path;
use support::{path, stderr_of_failure, stdout_ok, tiny_lite, write_bf16_safetensors};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{Checkpoint, ConvertOptions, KeepAs};
use tquant::formats::ScaleRule;

const EMBED: &str = "model.embed_tokens.weight";
const GATE: &str = "model.layers.0.mlp.gate_proj.weight";

fn convert(out: &Path, extra: &[&str]) -> serde_json::Value {
    let model = tiny_lite();
    let mut args = vec!["convert", path(&model), "-o", path(out), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&stdout_ok(&args)).unwrap()
}

/// `(action, format)` of tensor `name` in a `--json` summary.
fn stored(summary: &serde_json::Value, name: &str) -> (String, String) {
    let t = summary["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} in the summary"));
    let format = t["format"].as_str().unwrap_or("").to_string();
    (t["action"].as_str().unwrap().to_string(), format)
}

#[test]
fn the_default_is_the_balanced_preset() {
    let tmp = tempfile::tempdir().unwrap();
    let (default, balanced) = (tmp.path().join("d"), tmp.path().join("b"));
    let d = convert(&default, &[]);
    convert(&balanced, &["--quality", "balanced"]);
    for file in ["model.safetensors", "config.json"] {
        let read = |dir: &Path| std::fs::read(dir.join(file)).unwrap();
        assert!(read(&default) == read(&balanced), "{file} differs");
    }
    // 69 decoder matrices learned+search, the embeddings and the head q8_0.
    assert_eq!(
        (d["quantized"].as_u64(), d["q8_0"].as_u64()),
        (Some(71), Some(2))
    );
    assert_eq!(stored(&d, GATE), ("quantize".into(), "learned".into()));
    assert_eq!(stored(&d, EMBED), ("quantize".into(), "q8_0".into()));
    let q = Checkpoint::open(&default).unwrap();
    let qc = &q.config().unwrap()["quantization_config"];
    assert_eq!(qc["keep_as"], "q8_0", "{qc}");
    assert!(qc["calibration"].is_null(), "{qc}");
    let gate = q.quant_info(GATE).unwrap();
    assert_eq!(gate.scale_rule, Some(ScaleRule::Search));
}

/// bits per byte of `dir` on the first 4096 bytes of the held-out text.
fn bits_per_byte(dir: &Path) -> f64 {
    let text = support::root().join("tests/data/model/heldout_head.txt");
    let args = [
        "eval",
        path(dir),
        "--text",
        path(&text),
        "--max-bytes",
        "4096",
    ];
    let out = stdout_ok(&[&args[..], &["--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["bits_per_byte"].as_f64().unwrap()
}

#[test]
fn four_bit_embeddings_with_a_q8_0_head() {
    let tmp = tempfile::tempdir().unwrap();
    let (head, both) = (tmp.path().join("h"), tmp.path().join("b"));
    let extra = ["--quality", "fast", "--keep-as"];
    let h = convert(&head, &[&extra[..], &["head-q8_0"]].concat());
    convert(&both, &[&extra[..], &["q8_0"]].concat());
    assert_eq!(
        (h["quantized"].as_u64(), h["q8_0"].as_u64()),
        (Some(71), Some(1))
    );
    assert_eq!(stored(&h, EMBED), ("quantize".into(), "int4_full".into()));
    assert_eq!(
        stored(&h, "lm_head.weight"),
        ("quantize".into(), "q8_0".into())
    );
    let q = Checkpoint::open(&head).unwrap();
    assert_eq!(
        q.config().unwrap()["quantization_config"]["keep_as"],
        "head-q8_0"
    );
    // The model looks its tokens up in the 4-bit embeddings: within a little of the q8_0
    // ones (on the whole text, 0.007 bits per byte worse), far from a broken lookup.
    let (h, b) = (bits_per_byte(&head), bits_per_byte(&both));
    assert!(h != b && (h - b).abs() < 0.05, "{h} {b}");
}

#[test]
fn fast_preset_and_settings_that_replace_its_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = convert(&tmp.path().join("f"), &["--quality", "fast"]);
    assert_eq!(stored(&fast, GATE).1, "int4_full");
    assert_eq!(stored(&fast, EMBED).1, "q8_0");
    let own = convert(
        &tmp.path().join("o"),
        &[
            "--quality",
            "fast",
            "--format",
            "nf4",
            "--keep-as",
            "source",
        ],
    );
    assert_eq!(stored(&own, GATE).1, "nf4");
    assert_eq!(stored(&own, EMBED).0, "keep");
    assert_eq!(own["q8_0"].as_u64(), Some(0));
}

/// The calibration a quantized checkpoint records in its config.
fn calibration(dir: &Path) -> serde_json::Value {
    let q = Checkpoint::open(dir).unwrap();
    q.config().unwrap()["quantization_config"]["calibration"].clone()
}

#[test]
fn best_preset_calibrates_on_its_own_text() {
    let tmp = tempfile::tempdir().unwrap();
    let best = tmp.path().join("best");
    let s = convert(&best, &["--quality", "best"]);
    assert_eq!(stored(&s, GATE).1, "learned");
    let cal = calibration(&best);
    assert_eq!(cal["tokens"], 65536, "{cal}");
    assert!(cal["source"].as_str().unwrap().contains("self-generated"));
    let q = Checkpoint::open(&best).unwrap();
    let gate = q.quant_info(GATE).unwrap();
    assert_eq!(gate.calibration.as_ref().unwrap().calibrated, [true]);
    // The embeddings have no input statistics: quantized without them.
    assert!(q.quant_info(EMBED).unwrap().calibration.is_none());
}

/// A calibration text replaces the self-generated one (a test of its own: the two conversions
/// run side by side).
#[test]
fn best_preset_calibrates_on_a_given_text_instead() {
    let tmp = tempfile::tempdir().unwrap();
    let text = support::root().join("tests/data/model/heldout_head.txt");
    let file = tmp.path().join("file");
    let args = ["--quality", "best", "--calibrate", path(&text)];
    convert(&file, &[&args[..], &["--calibrate-bytes", "8192"]].concat());
    let cal = calibration(&file);
    assert!(
        cal["source"].as_str().unwrap().contains("heldout_head.txt"),
        "{cal}"
    );
}

#[test]
fn presets_and_head_only_storage_are_refused_where_they_do_not_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_lite();
    let out = tmp.path().join("out");
    let with = |extra: &[&str]| {
        let mut a = vec!["convert", path(&model), "-o", path(&out)];
        a.extend_from_slice(extra);
        stderr_of_failure(&a)
    };
    let e = with(&["--quality", "fast", "--layout", "bnb"]);
    assert!(e.contains("--quality is for --layout tquant"), "{e}");
    let e = with(&["--keep-as", "head-q8_0", "--layout", "mxfp4"]);
    assert!(
        e.contains("--keep-as head-q8_0 needs --layout tquant"),
        "{e}"
    );
    let e = with(&["--keep-as", "head-q8_0", "--layout", "gguf"]);
    assert!(
        e.contains("--keep-as head-q8_0 does not apply to --layout gguf"),
        "{e}"
    );
    let e = with(&["--quality", "good"]);
    assert!(e.contains("fast, balanced, best"), "{e}");
    assert!(!out.exists());
}

/// Tied embeddings are the output head too: with no `lm_head.weight` they stay q8_0.
#[test]
fn tied_embeddings_stay_q8_0() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tied.safetensors");
    let tensors = [
        (EMBED.to_string(), vec![64, 128]),
        (
            "model.layers.0.mlp.up_proj.weight".to_string(),
            vec![64, 128],
        ),
    ];
    let pool: Vec<u8> = (0..4096u32)
        .flat_map(|i| support::bf16_bytes(((i * 7919 % 1000) as f32 - 500.0) / 3000.0))
        .collect();
    let mut rng = tquant::formats::sample::Rng::new(3);
    write_bf16_safetensors(&file, &tensors, &pool, &mut rng);
    let opts = ConvertOptions::builder()
        .keep_as(KeepAs::HeadQ8_0)
        .build()
        .unwrap();
    assert_eq!(opts.keep_as(), KeepAs::HeadQ8_0);
    let out = tmp.path().join("out");
    let run = RunOptions::default();
    let s = tquant::convert::convert(&file, &out, &opts, &run, &NoProgress).unwrap();
    let formats: Vec<_> = s.tensors.iter().map(|t| t.format.clone()).collect();
    assert_eq!(formats[0].as_deref(), Some("q8_0"), "{formats:?}");
    assert_eq!(s.q8_0, 1);
}
