//! `tquant convert --calibrate` collects the statistics one decoder layer at a time (only that
//! layer's weights and statistics in memory); the checkpoint it writes is the one the
//! whole-model statistics give, byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tquant::convert::calibration::{Calibration, CalibrationSettings};
use tquant::convert::{convert, ConvertOptions, Layout, NoProgress, Policy, RunOptions};
use tquant::model::calibrate::{capture, to_calibration, CaptureOptions};
use tquant::model::{checkpoint_source, Model, Options, TensorSource};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// A safetensors file's header (parsed) and data bytes.
fn split_safetensors(bytes: &[u8]) -> (serde_json::Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, &bytes[8 + n..])
}

#[test]
fn layer_by_layer_checkpoint_equals_the_whole_model_one() {
    let text = root().join("tests/data/model/heldout_head.txt");
    let bytes = std::fs::read(&text).unwrap();
    let tokens: Vec<u32> = bytes[60000..63000].iter().map(|&b| b as u32).collect();
    let model = root().join("examples/tiny-lite");
    for format in ["nf4", "auto"] {
        check(&model, &text, "bytes", 60000, &tokens, format);
    }
}

/// The same on the DeepSeek-V2-shaped fixture (q-LoRA, so the query latent is a site of its
/// own; group-limited routing; three shards), calibrated on token ids.
#[test]
fn layer_by_layer_equals_whole_model_with_q_lora_and_token_ids() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.bin");
    let mut rng = tquant::formats::sample::Rng::new(3);
    let tokens: Vec<u32> = (0..2000).map(|_| rng.below(128) as u32).collect();
    let raw: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(&ids, raw).unwrap();
    check(
        &root().join("tests/data/model/v2"),
        &ids,
        "ids",
        0,
        &tokens,
        "nf4",
    );
}

/// The same on the DeepSeek-V3-shaped fixture: sigmoid routing with a correction bias, routed
/// experts run one at a time over all chunks, and an MTP layer (converted uncalibrated).
#[test]
fn layer_by_layer_equals_whole_model_on_deepseek_v3() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.bin");
    let mut rng = tquant::formats::sample::Rng::new(4);
    let tokens: Vec<u32> = (0..1200).map(|_| rng.below(128) as u32).collect();
    let raw: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(&ids, raw).unwrap();
    check(
        &root().join("tests/data/model/deepseek_v3_tiny"),
        &ids,
        "ids",
        0,
        &tokens,
        "nf4",
    );
}

/// The same with fused 3-D expert tensors (`experts.gate_up_proj`, `experts.down_proj`), whose
/// matrices are quantized in as many stages as the tensor has experts, each expert's record
/// filled in by its own stage.
#[test]
fn layer_by_layer_equals_whole_model_with_fused_expert_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.bin");
    let mut rng = tquant::formats::sample::Rng::new(5);
    let tokens: Vec<u32> = (0..1500).map(|_| rng.below(128) as u32).collect();
    let raw: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(&ids, raw).unwrap();
    check(
        &root().join("tests/data/model/lite"),
        &ids,
        "ids",
        0,
        &tokens,
        "nf4",
    );
}

/// Converts `model` with `--calibrate FILE` (layer by layer) and with the whole-model capture
/// of the same `tokens` (read from FILE at `offset` in `unit`s), and compares the checkpoints.
fn check(model: &Path, file: &Path, unit: &str, offset: usize, tokens: &[u32], format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (layerwise, whole) = (dir.path().join("layerwise"), dir.path().join("whole"));
    let window = 256usize;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tquant"));
    cmd.args(["convert", model.to_str().unwrap(), "-o"])
        .arg(&layerwise)
        .args(["--format", format, "--block", "64", "--scale-dtype", "f16"])
        .args(["--force", "--calibrate"])
        .arg(file)
        .args(["--calibrate-offset", &offset.to_string()])
        .args(["--calibrate-bytes", &tokens.len().to_string()])
        .args(["--calibrate-window", &window.to_string()]);
    if unit == "ids" {
        cmd.arg("--calibrate-ids");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let float = Model::open(model, Options::default()).unwrap();
    let opts = CaptureOptions {
        window,
        ..CaptureOptions::default()
    };
    let moments = capture(&float, tokens, &opts).unwrap();
    let src = checkpoint_source(model).unwrap();
    let source = format!(
        "{} {unit} {offset}..{}, window {window}",
        file.display(),
        offset + tokens.len()
    );
    let outline = Calibration::new(CalibrationSettings::default(), source, tokens.len() as u64);
    let layers = 0..float.config().num_hidden_layers;
    let cal = to_calibration(
        moments,
        float.config(),
        &|n| src.contains(n),
        outline,
        layers,
    )
    .unwrap();
    let mut conv = ConvertOptions::from_args(
        Some(format),
        None,
        Some("64"),
        Some("f16"),
        Layout::Tquant,
        Policy::default(),
    )
    .unwrap();
    conv.calibration = Some(Arc::new(cal));
    let run = RunOptions {
        force: true,
        threads: None,
    };
    convert(model, &whole, &conv, &run, &NoProgress).unwrap();

    let (a, b) = (files(&layerwise), files(&whole));
    assert_eq!(
        a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if name.ends_with(".safetensors") {
            // The layer-by-layer header reserved room for records not known when it was
            // planned, so only its padding may differ.
            let (hx, dx) = split_safetensors(x);
            let (hy, dy) = split_safetensors(y);
            assert_eq!(hx, hy, "{format}: {name} header");
            assert!(dx == dy, "{format}: {name} tensor data differs");
        } else {
            assert!(x == y, "{format}: {name} differs between the two paths");
        }
    }
}
