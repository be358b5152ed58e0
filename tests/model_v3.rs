//! The DeepSeek-V3 architecture (V3, R1, Kimi-K2, Moonlight) against transformers' logits on the
//! random fixtures of scripts/fixtures/deepseek_v3.py: sigmoid + noaux_tc routing with a
//! selection-only bias, YaRN, a dense first layer, and an MTP layer in the checkpoint that the
//! runner leaves alone; then the same checkpoint converted to nf4, MTP layer included.

use crate::support;

use std::path::{Path, PathBuf};
use support::{max_diff, path, stdout_ok, Dequantized};
use tquant::convert::{Checkpoint, Dtype, Weight};
use tquant::model::{
    checkpoint_source, AttentionPath, Config, Logits, Model, ModelError, Options, TensorData,
    TensorSource,
};

/// Logits are O(1..10); transformers runs the same f32 arithmetic in another order.
const LOGIT_TOLERANCE: f32 = 1e-3;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/model")
        .join(name)
}

/// The V3 fixture stored as DeepSeek ships V3: FP8 linears with 128 x 128 block scales
/// (scripts/fixtures/fp8.py), and transformers' logits when it loads that FP8 checkpoint.
fn fp8_v3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/fp8/deepseek_v3_tiny")
}

/// Each reference sequence: tokens and logits `[positions * vocab]`.
fn reference(name: &str) -> Vec<(Vec<u32>, Vec<f32>)> {
    reference_at(&data(&format!("{name}.json")))
}

fn reference_at(file: &Path) -> Vec<(Vec<u32>, Vec<f32>)> {
    let text = std::fs::read_to_string(file).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tokens = s["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let logits = s["logits"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter())
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (tokens, logits)
        })
        .collect()
}

fn prefill(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache();
    model.forward(tokens, &mut cache, Logits::All).unwrap()
}

fn check_prefill(name: &str, attention: AttentionPath) {
    let opts = Options {
        attention,
        threads: 2,
        ..Options::default()
    };
    let model = Model::open(&data(name), opts).unwrap();
    for (tokens, want) in reference(name) {
        let d = max_diff(&prefill(&model, &tokens), &want);
        eprintln!(
            "{name} {attention:?} {} tokens: max |diff| {d}",
            tokens.len()
        );
        assert!(d < LOGIT_TOLERANCE, "{name} {attention:?}: max |diff| {d}");
    }
}

#[test]
fn v3_fixture_matches_transformers() {
    let c = Config::from_path(&data("deepseek_v3_tiny")).unwrap();
    // What the fixture is meant to exercise.
    assert_eq!((c.n_group, c.topk_group, c.num_experts_per_tok), (4, 2, 3));
    assert_eq!(c.num_nextn_predict_layers, 1);
    assert!(!c.is_moe_layer(0) && c.is_moe_layer(1));
    check_prefill("deepseek_v3_tiny", AttentionPath::Naive);
    check_prefill("deepseek_v3_tiny", AttentionPath::Absorbed);
}

#[test]
fn kimi_shaped_fixture_matches_transformers() {
    let c = Config::from_path(&data("kimi_tiny")).unwrap();
    assert_eq!((c.n_group, c.q_lora_rank, c.rms_norm_eps), (1, None, 1e-5));
    check_prefill("kimi_tiny", AttentionPath::Naive);
    check_prefill("kimi_tiny", AttentionPath::Absorbed);
}

#[test]
fn v3_decode_with_compressed_cache_matches_transformers() {
    let model = Model::open(&data("deepseek_v3_tiny"), Options::default()).unwrap();
    let (tokens, want) = &reference("deepseek_v3_tiny")[0];
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache();
    let first = model
        .forward(&tokens[..4], &mut cache, Logits::Last)
        .unwrap();
    let mut worst = max_diff(&first, &want[3 * vocab..4 * vocab]);
    for (i, &t) in tokens.iter().enumerate().skip(4) {
        let l = model.forward(&[t], &mut cache, Logits::Last).unwrap();
        worst = worst.max(max_diff(&l, &want[i * vocab..(i + 1) * vocab]));
    }
    assert!(worst < LOGIT_TOLERANCE, "decode: max |diff| {worst}");
}

/// `tquant logits DIR --tokens ...`, every position's logits in a row.
fn cli_logits(dir: &Path, tokens: &[u32]) -> Vec<f32> {
    let list: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let out = stdout_ok(&["logits", path(dir), "--tokens", &list.join(",")]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn logits_command_matches_transformers() {
    let (tokens, want) = &reference("deepseek_v3_tiny")[1];
    let d = max_diff(&cli_logits(&data("deepseek_v3_tiny"), tokens), want);
    assert!(d < LOGIT_TOLERANCE, "tquant logits: max |diff| {d}");
}

#[test]
fn fp8_checkpoint_matches_transformers_fp8_loading() {
    let dir = fp8_v3();
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert!(ckpt.has_fp8());
    let model = Model::open(&dir, Options::default()).unwrap();
    let want = reference_at(&dir.with_extension("json"));
    for (tokens, want) in &want {
        let d = max_diff(&prefill(&model, tokens), want);
        assert!(d < LOGIT_TOLERANCE, "FP8 V3: max |diff| {d}");
    }
    // The CLI path too.
    let (tokens, want) = &want[1];
    let d = max_diff(&cli_logits(&dir, tokens), want);
    assert!(d < LOGIT_TOLERANCE, "tquant logits on FP8: max |diff| {d}");
}

#[test]
fn fp8_checkpoint_converts_without_its_mtp_layer_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nf4");
    let input = fp8_v3();
    stdout_ok(&[
        "convert",
        path(&input),
        "-o",
        path(&out),
        "--format",
        "nf4",
        "--drop",
        "model.layers.3.*",
    ]);
    let ckpt = Checkpoint::open(&out).unwrap();
    let names: Vec<&str> = ckpt.raw_names().collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with("_scale_inv") && !n.starts_with("model.layers.3.")),
        "{names:?}"
    );
    assert!(ckpt
        .quant_info("model.layers.1.mlp.experts.7.up_proj.weight")
        .is_some());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_ne!(config["quantization_config"]["quant_method"], "fp8");
    // The quantized model runs on its codes exactly as on its dequantized weights.
    let model = Model::open(&out, Options::default()).unwrap();
    let deq = Model::from_source(
        Config::from_path(&out).unwrap(),
        &Dequantized(ckpt),
        Options::default(),
    )
    .unwrap();
    let tokens = &reference("deepseek_v3_tiny")[0].0;
    let d = max_diff(&prefill(&model, tokens), &prefill(&deq, tokens));
    assert!(d < 1e-3, "quantized vs dequantized: {d}");
}

/// A checkpoint with some tensors hidden.
struct Without<S> {
    inner: S,
    hidden: &'static str,
}

impl<S: TensorSource> TensorSource for Without<S> {
    fn contains(&self, name: &str) -> bool {
        name != self.hidden && self.inner.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.inner.tensor(name)
    }
}

#[test]
fn missing_correction_bias_is_named() {
    let dir = data("deepseek_v3_tiny");
    let config = Config::from_path(&dir).unwrap();
    let src = Without {
        inner: checkpoint_source(&dir).unwrap(),
        hidden: "model.layers.2.mlp.gate.e_score_correction_bias",
    };
    let e = Model::from_source(config, &src, Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.2.mlp.gate.e_score_correction_bias") && e.contains("missing"),
        "{e}"
    );
}

/// The stored dtype of `name` (dense tensors only).
fn dense_dtype(ckpt: &Checkpoint, name: &str) -> Dtype {
    match ckpt.get(name).unwrap() {
        Weight::Dense(t) => t.dtype,
        Weight::Quantized(_) => panic!("{name} is quantized"),
    }
}

#[test]
fn converted_to_nf4_keeps_the_mtp_layer_and_runs() {
    let input = data("deepseek_v3_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nf4");
    stdout_ok(&["convert", path(&input), "-o", path(&out), "--format", "nf4"]);
    let ckpt = Checkpoint::open(&out).unwrap();
    // The MTP layer (index 3 = num_hidden_layers) is converted like any decoder layer.
    let mtp = "model.layers.3";
    for q in [
        "self_attn.q_a_proj.weight",
        "self_attn.kv_b_proj.weight",
        "mlp.experts.5.down_proj.weight",
        "mlp.shared_experts.up_proj.weight",
        "eh_proj.weight",
        "shared_head.head.weight",
    ] {
        let name = format!("{mtp}.{q}");
        assert!(ckpt.quant_info(&name).is_some(), "{name} is not quantized");
    }
    for kept in ["enorm.weight", "hnorm.weight"] {
        let name = format!("{mtp}.{kept}");
        assert!(
            matches!(ckpt.get(&name).unwrap(), Weight::Dense(_)),
            "{name}"
        );
    }
    // Its embedding table is stored as q8_0, as the model's own (the default).
    for name in [
        format!("{mtp}.embed_tokens.weight"),
        "model.embed_tokens.weight".into(),
    ] {
        let info = ckpt.quant_info(&name);
        assert!(info.is_some_and(|i| i.is_q8_0()), "{name} is not q8_0");
    }
    // Routers stay float; the bias keeps its f32.
    for l in [2, 3] {
        let bias = format!("model.layers.{l}.mlp.gate.e_score_correction_bias");
        assert_eq!(dense_dtype(&ckpt, &bias), Dtype::F32, "{bias}");
        let gate = format!("model.layers.{l}.mlp.gate.weight");
        assert!(
            matches!(ckpt.get(&gate).unwrap(), Weight::Dense(_)),
            "{gate}"
        );
    }
    // The runner reads the quantized layers through the kernels: the same logits as with the
    // weights dequantized to f32.
    let model = Model::open(&out, Options::default()).unwrap();
    assert!(model.is_quantized());
    let config = Config::from_path(&out).unwrap();
    let deq = Model::from_source(config, &Dequantized(ckpt), Options::default()).unwrap();
    let (tokens, want) = &reference("deepseek_v3_tiny")[0];
    let (q, d) = (prefill(&model, tokens), prefill(&deq, tokens));
    let diff = max_diff(&q, &d);
    assert!(diff < 1e-3, "quantized vs dequantized: {diff}");
    // 4-bit weights move the logits of this random (chaotic) model a lot, but the logits stay
    // correlated with the float model's at every position (an unrelated model gives about 0).
    let vocab = model.config().vocab_size;
    let corr: Vec<f32> = q
        .chunks(vocab)
        .zip(want.chunks(vocab))
        .map(|(a, b)| correlation(a, b))
        .collect();
    let mean = corr.iter().sum::<f32>() / corr.len() as f32;
    eprintln!("nf4 vs float logits: mean correlation {mean}");
    assert!(mean > 0.25 && mean < 0.999, "nf4 vs float: {corr:?}");
    let cli = stdout_ok(&["logits", path(&out), "--tokens", "3,17,92", "--last"]);
    assert!(cli.contains("logits"), "{cli}");
}

fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    ab / (aa * bb).sqrt()
}

/// Calibration reads one expert of a fused 3-D tensor at a time: the slice equals that part of
/// the whole tensor, and a matrix past the end is an error naming the tensor.
#[test]
fn one_expert_of_a_fused_tensor_is_read_alone() {
    let src = checkpoint_source(&data("lite")).unwrap();
    let name = "model.layers.1.mlp.experts.gate_up_proj";
    let TensorData::Dense { shape, values } = src.tensor(name).unwrap() else {
        panic!("{name} is stored as floats")
    };
    let per = shape[1] * shape[2];
    let Some(Ok(TensorData::Dense {
        shape: s3,
        values: v3,
    })) = src.part(name, 3)
    else {
        panic!("{name}: no slice")
    };
    assert_eq!(s3, [shape[1], shape[2]]);
    assert!(v3 == values[3 * per..4 * per]);
    let e = src.part(name, shape[0]).unwrap().unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("matrix 8"), "{e}");
    // A 2-D tensor has no parts: the whole tensor is read instead.
    assert!(src
        .part("model.layers.0.self_attn.q_proj.weight", 0)
        .is_none());
}
