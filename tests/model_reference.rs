//! The DeepSeek-V2 runner against transformers' logits on the random fixtures of
//! scripts/fixtures/deepseek_reference.py (V2-Lite shape with fused f16 experts; V2 shape with
//! q-LoRA, group-limited routing, YaRN and bf16 shards).

use crate::support;

use std::path::{Path, PathBuf};
use support::max_diff;
use tquant::model::{AttentionPath, Logits, Model, Options};

/// Logits are O(1..10); transformers runs the same f32 arithmetic in another order.
const LOGIT_TOLERANCE: f32 = 1e-3;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/model")
        .join(name)
}

struct Reference {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(data(&format!("{name}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tokens = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let logits = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    Reference { tokens, logits }
}

fn check_prefill(name: &str, path: AttentionPath, threads: usize) {
    let r = reference(name);
    let opts = Options {
        attention: path,
        threads,
        ..Options::default()
    };
    let model = Model::open(&data(name), opts).unwrap();
    let mut cache = model.new_cache();
    let got = model.forward(&r.tokens, &mut cache, Logits::All).unwrap();
    let want: Vec<f32> = r.logits.concat();
    let d = max_diff(&got, &want);
    eprintln!("{name} {path:?}: max |diff| {d}");
    assert!(d < LOGIT_TOLERANCE, "{name} {path:?}: max |diff| {d}");
    assert_eq!(cache.len(), r.tokens.len());
}

/// Prefill of a prefix, then one decode step per token: every step's logits match.
fn check_decode(name: &str, prefix: usize) {
    let r = reference(name);
    let model = Model::open(&data(name), Options::default()).unwrap();
    let mut cache = model.new_cache();
    let first = model
        .forward(&r.tokens[..prefix], &mut cache, Logits::Last)
        .unwrap();
    let mut worst = max_diff(&first, &r.logits[prefix - 1]);
    for (i, &t) in r.tokens.iter().enumerate().skip(prefix) {
        let l = model.forward(&[t], &mut cache, Logits::Last).unwrap();
        worst = worst.max(max_diff(&l, &r.logits[i]));
    }
    assert!(worst < LOGIT_TOLERANCE, "{name} decode: max |diff| {worst}");
    // The cache holds kv_lora_rank + qk_rope_head_dim values per token and layer.
    let c = model.config();
    assert_eq!(cache.width(), c.kv_lora_rank + c.qk_rope_head_dim);
    assert_eq!(
        cache.bytes(),
        4 * cache.width() * r.tokens.len() * c.num_hidden_layers
    );
}

#[test]
fn lite_fixture_matches_transformers() {
    check_prefill("lite", AttentionPath::Auto, 1);
}

#[test]
fn v2_fixture_matches_transformers() {
    check_prefill("v2", AttentionPath::Auto, 2);
}

#[test]
fn absorbed_attention_matches_transformers_in_prefill() {
    check_prefill("lite", AttentionPath::Absorbed, 2);
    check_prefill("v2", AttentionPath::Absorbed, 1);
}

#[test]
fn decode_with_compressed_cache_matches_transformers() {
    check_decode("lite", 5);
    check_decode("v2", 1);
}

#[test]
fn absorbed_and_naive_attention_agree() {
    let r = reference("v2");
    let run = |path| {
        let opts = Options {
            attention: path,
            ..Options::default()
        };
        let model = Model::open(&data("v2"), opts).unwrap();
        let mut cache = model.new_cache();
        let mut out = model
            .forward(&r.tokens[..7], &mut cache, Logits::All)
            .unwrap();
        // A second block on top of the cache: attends to cached and new tokens.
        out.extend(
            model
                .forward(&r.tokens[7..], &mut cache, Logits::All)
                .unwrap(),
        );
        out
    };
    let (naive, absorbed) = (run(AttentionPath::Naive), run(AttentionPath::Absorbed));
    let d = max_diff(&naive, &absorbed);
    assert!(d < 1e-4, "naive vs absorbed: {d}");
}

#[test]
fn bad_token_is_an_error_not_a_panic() {
    let model = Model::open(&data("lite"), Options::default()).unwrap();
    let mut cache = model.new_cache();
    let e = model
        .forward(&[1, 128], &mut cache, Logits::All)
        .unwrap_err();
    assert!(e.to_string().contains("128"), "{e}");
}

#[test]
fn missing_or_misshaped_tensors_are_named_in_errors() {
    use tquant::model::{checkpoint_source, Config, MemorySource, TensorData};
    let src = checkpoint_source(&data("v2")).unwrap();
    let config = Config::from_path(&data("v2")).unwrap();
    let mut bad = MemorySource::over(&src);
    bad.insert(
        "model.layers.1.self_attn.kv_b_proj.weight",
        TensorData::Dense {
            shape: vec![96, 32],
            values: vec![0.0; 96 * 32],
        },
    );
    let e = Model::from_source(config.clone(), &bad, Options::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("model.layers.1.self_attn.kv_b_proj.weight") && msg.contains("[96, 32]"),
        "{msg}"
    );
    // The hub config names q_a_proj; a checkpoint without it is refused by name.
    let mut lite_config = config;
    lite_config.q_lora_rank = None;
    let e = Model::from_source(lite_config, &src, Options::default()).unwrap_err();
    assert!(e.to_string().contains("q_proj.weight"), "{e}");
}
