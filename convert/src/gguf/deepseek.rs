//! DeepSeek-V2 / V3 as llama.cpp's `deepseek2` architecture: the metadata its converter
//! (`conversion/deepseek.py` `DeepseekV2Model`, over `TextModel.set_gguf_parameters`) writes
//! from `config.json`, and the tensor names and shapes its loader (`src/models/deepseek2.cpp`)
//! asks for: `kv_b_proj` split into `attn_k_b` (transposed per head) and `attn_v_b`, routed
//! experts stacked into 3-D `ffn_{gate,up,down}_exps`.

use super::error::GgufError;
use super::file::{GgufFile, Value};
use serde_json::Value as Json;
use std::path::Path;

/// The architecture name.
pub const ARCH: &str = "deepseek2";

/// The settings of `config.json` the export uses.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepseekConfig {
    /// `num_hidden_layers`: decoder layers (later ones are multi-token prediction, not written).
    pub layers: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `qk_nope_head_dim`.
    pub qk_nope: usize,
    /// `qk_rope_head_dim`.
    pub qk_rope: usize,
    /// `v_head_dim`.
    pub v_head: usize,
    /// `kv_lora_rank`.
    pub kv_lora: usize,
    /// `n_routed_experts` (0 for a dense model).
    pub experts: usize,
    /// `vocab_size`.
    pub vocab: usize,
}

fn num(cfg: &Json, key: &str) -> Option<f64> {
    cfg.get(key).and_then(Json::as_f64)
}

/// Reads the settings and writes the `deepseek2.*` metadata into `file`.
pub fn add_metadata(
    file: &mut GgufFile,
    cfg: &Json,
    path: &Path,
) -> Result<DeepseekConfig, GgufError> {
    let bad = |reason: String| GgufError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let need = |key: &str| -> Result<usize, GgufError> {
        cfg.get(key)
            .and_then(Json::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("`{key}` is missing or not a whole number")))
    };
    let arch = cfg["architectures"][0].as_str().unwrap_or_default();
    if !matches!(arch, "DeepseekV2ForCausalLM" | "DeepseekV3ForCausalLM") {
        return Err(bad(format!(
            "architecture {arch:?}: the gguf layout writes DeepSeek-V2 and -V3 \
             (DeepseekV2ForCausalLM, DeepseekV3ForCausalLM)"
        )));
    }
    let k = |name: &str| format!("{ARCH}.{name}");
    let u = |v: usize| Value::U32(v as u32);
    let c = DeepseekConfig {
        layers: need("num_hidden_layers")?,
        heads: need("num_attention_heads")?,
        qk_nope: need("qk_nope_head_dim")?,
        qk_rope: need("qk_rope_head_dim")?,
        v_head: need("v_head_dim")?,
        kv_lora: cfg
            .get("kv_lora_rank")
            .and_then(Json::as_u64)
            .unwrap_or(512) as usize,
        experts: cfg
            .get("n_routed_experts")
            .and_then(Json::as_u64)
            .unwrap_or(0) as usize,
        vocab: need("vocab_size")?,
    };
    file.set("general.architecture", Value::Str(ARCH.into()));
    // TextModel.set_gguf_parameters, in its order.
    file.set(k("block_count"), u(c.layers));
    if let Some(n) = cfg.get("max_position_embeddings").and_then(Json::as_u64) {
        file.set(k("context_length"), u(n as usize));
    }
    file.set(k("embedding_length"), u(need("hidden_size")?));
    if let Some(n) = cfg.get("intermediate_size").and_then(Json::as_u64) {
        file.set(k("feed_forward_length"), u(n as usize));
    }
    file.set(k("attention.head_count"), u(c.heads));
    // MLA is converted to MQA with one key-value head of the latent's width.
    file.set(k("attention.head_count_kv"), u(1));
    let rope = cfg
        .get("rope_parameters")
        .or_else(|| cfg.get("rope_scaling"))
        .filter(|r| r.is_object())
        .cloned()
        .unwrap_or(Json::Null);
    let rope_type = rope["rope_type"].as_str().or_else(|| rope["type"].as_str());
    let factor = rope["factor"].as_f64();
    match (rope_type, factor) {
        (Some("yarn"), Some(f)) => {
            file.set(k("rope.scaling.type"), Value::Str("yarn".into()));
            file.set(k("rope.scaling.factor"), Value::F32(f as f32));
            let orig = rope["original_max_position_embeddings"]
                .as_u64()
                .ok_or_else(|| {
                    bad("yarn rope scaling without original_max_position_embeddings".into())
                })?;
            file.set(k("rope.scaling.original_context_length"), u(orig as usize));
            for (key, name) in [
                ("extrapolation_factor", "rope.scaling.yarn_ext_factor"),
                ("attention_factor", "rope.scaling.yarn_attn_factor"),
                ("beta_fast", "rope.scaling.yarn_beta_fast"),
                ("beta_slow", "rope.scaling.yarn_beta_slow"),
            ] {
                let v = rope[key].as_f64().or_else(|| {
                    (key == "attention_factor")
                        .then(|| rope["attn_factor"].as_f64())
                        .flatten()
                });
                if let Some(v) = v {
                    file.set(k(name), Value::F32(v as f32));
                }
            }
        }
        (Some("linear"), Some(f)) => {
            file.set(k("rope.scaling.type"), Value::Str("linear".into()));
            file.set(k("rope.scaling.factor"), Value::F32(f as f32));
        }
        (None, _) | (Some("default"), _) => {}
        (Some(t), _) => {
            return Err(bad(format!(
                "rope scaling type {t:?} is not one deepseek2 runs"
            )))
        }
    }
    if let Some(theta) = rope["rope_theta"]
        .as_f64()
        .or_else(|| num(cfg, "rope_theta"))
    {
        file.set(k("rope.freq_base"), Value::F32(theta as f32));
    }
    let eps = num(cfg, "rms_norm_eps").unwrap_or(1e-6);
    file.set(
        k("attention.layer_norm_rms_epsilon"),
        Value::F32(eps as f32),
    );
    if c.experts > 0 {
        file.set(k("expert_count"), u(c.experts));
    }
    if let Some(n) = cfg.get("num_experts_per_tok").and_then(Json::as_u64) {
        file.set(k("expert_used_count"), u(n as usize));
    }
    if let Some(n) = cfg.get("n_group").and_then(Json::as_u64) {
        file.set(k("expert_group_count"), u(n as usize));
    }
    if let Some(n) = cfg.get("topk_group").and_then(Json::as_u64) {
        file.set(k("expert_group_used_count"), u(n as usize));
    }
    match cfg.get("scoring_func").and_then(Json::as_str) {
        None => {}
        Some("softmax") => file.set(k("expert_gating_func"), Value::U32(1)),
        Some("sigmoid") => file.set(k("expert_gating_func"), Value::U32(2)),
        Some(f) => return Err(bad(format!("scoring_func {f:?} is not softmax or sigmoid"))),
    }
    // DeepseekV2Model.set_gguf_parameters.
    let dense_lead = match cfg.get("first_k_dense_replace").and_then(Json::as_u64) {
        Some(n) => n as usize,
        None if c.experts == 0 => c.layers,
        None => 0,
    };
    file.set(k("leading_dense_block_count"), u(dense_lead));
    file.set(k("vocab_size"), u(c.vocab));
    // Written as 0 when the model has no query LoRA: llama.cpp guesses "lite" from the layer
    // count (26 or 27) and requires the key otherwise, so a cut of V2-Lite would not load.
    let q_lora = cfg.get("q_lora_rank").and_then(Json::as_u64).unwrap_or(0);
    file.set(k("attention.q_lora_rank"), u(q_lora as usize));
    file.set(k("attention.kv_lora_rank"), u(c.kv_lora));
    file.set(k("attention.key_length"), u(c.kv_lora + c.qk_rope));
    file.set(k("attention.value_length"), u(c.kv_lora));
    file.set(k("attention.key_length_mla"), u(c.qk_nope + c.qk_rope));
    file.set(k("attention.value_length_mla"), u(c.v_head));
    let moe_ff = cfg
        .get("moe_intermediate_size")
        .or_else(|| cfg.get("intermediate_size"))
        .and_then(Json::as_u64)
        .ok_or_else(|| bad("`moe_intermediate_size` is missing".into()))?;
    file.set(k("expert_feed_forward_length"), u(moe_ff as usize));
    let shared = cfg
        .get("n_shared_experts")
        .and_then(Json::as_u64)
        .unwrap_or(0);
    file.set(k("expert_shared_count"), u(shared as usize));
    if let Some(s) = num(cfg, "routed_scaling_factor") {
        file.set(k("expert_weights_scale"), Value::F32(s as f32));
    }
    if cfg.get("norm_topk_prob").and_then(Json::as_bool) == Some(true) {
        file.set(k("expert_weights_norm"), Value::Bool(true));
    }
    file.set(k("rope.dimension_count"), u(c.qk_rope));
    if let Some(m) = rope["mscale_all_dim"].as_f64() {
        // llama.cpp stores 0.1 * mscale_all_dim here and divides it out when loading.
        file.set(
            k("rope.scaling.yarn_log_multiplier"),
            Value::F32((0.1 * m) as f32),
        );
    }
    Ok(c)
}

/// Where a GGUF tensor's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// One checkpoint tensor, as is.
    Tensor(String),
    /// `kv_b_proj` `[heads * (nope + v), kv_lora]`: its per-head key part transposed,
    /// `[heads, kv_lora, nope]` (`k: true`), or its value part `[heads, v, kv_lora]`.
    KvB {
        /// The checkpoint's `kv_b_proj` tensor.
        name: String,
        /// The key part (else the value part).
        k: bool,
    },
    /// Routed experts `[experts, rows, cols]`, one checkpoint tensor per expert.
    Experts(Vec<String>),
}

/// The GGUF name of a checkpoint tensor outside the routed experts and `kv_b_proj`: `Ok(None)`
/// for multi-token-prediction layers (not written, as llama.cpp's converter does).
pub fn gguf_name(name: &str, c: &DeepseekConfig) -> Option<Option<String>> {
    let top = match name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(Some(t.to_string()));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (bid, rest) = rest.split_once('.')?;
    let bid: usize = bid.parse().ok()?;
    if bid >= c.layers {
        return Some(None);
    }
    let short = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_a_proj.weight" => "attn_q_a.weight",
        "self_attn.q_a_layernorm.weight" => "attn_q_a_norm.weight",
        "self_attn.q_b_proj.weight" => "attn_q_b.weight",
        "self_attn.kv_a_proj_with_mqa.weight" => "attn_kv_a_mqa.weight",
        "self_attn.kv_a_layernorm.weight" => "attn_kv_a_norm.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.gate.weight" => "ffn_gate_inp.weight",
        "mlp.gate.e_score_correction_bias" => "exp_probs_b.bias",
        "mlp.shared_experts.gate_proj.weight" => "ffn_gate_shexp.weight",
        "mlp.shared_experts.up_proj.weight" => "ffn_up_shexp.weight",
        "mlp.shared_experts.down_proj.weight" => "ffn_down_shexp.weight",
        _ => return None,
    };
    Some(Some(format!("blk.{bid}.{short}")))
}

/// `(layer, projection)` of a routed expert's tensor `model.layers.L.mlp.experts.E.P.weight`,
/// with its expert index.
pub fn expert_of(name: &str) -> Option<(usize, usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (bid, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("mlp.experts.")?;
    let (e, rest) = rest.split_once('.')?;
    let proj = rest.strip_suffix(".weight")?;
    if !matches!(proj, "gate_proj" | "up_proj" | "down_proj") {
        return None;
    }
    Some((bid.parse().ok()?, e.parse().ok()?, proj))
}

/// The GGUF name of layer `bid`'s stacked `proj` experts.
pub fn experts_name(bid: usize, proj: &str) -> String {
    let short = proj.trim_end_matches("_proj");
    format!("blk.{bid}.ffn_{short}_exps.weight")
}

/// The key (`k`) or value part of a `kv_b_proj` matrix, `[heads * (nope + v), kv_lora]`
/// row-major: `[heads, kv_lora, nope]` (each head's key rows transposed) or `[heads, v, kv_lora]`.
pub fn split_kv_b(values: &[f32], c: &DeepseekConfig, k: bool) -> Vec<f32> {
    let (nope, v, r) = (c.qk_nope, c.v_head, c.kv_lora);
    let per_head = (nope + v) * r;
    let mut out = Vec::with_capacity(c.heads * if k { nope } else { v } * r);
    for h in 0..c.heads {
        let head = &values[h * per_head..(h + 1) * per_head];
        if k {
            for col in 0..r {
                out.extend((0..nope).map(|row| head[row * r + col]));
            }
        } else {
            out.extend_from_slice(&head[nope * r..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeepseekConfig {
        DeepseekConfig {
            layers: 2,
            heads: 2,
            qk_nope: 2,
            qk_rope: 1,
            v_head: 3,
            kv_lora: 4,
            experts: 0,
            vocab: 8,
        }
    }

    #[test]
    fn kv_b_splits_as_llama_cpps_converter() {
        let c = cfg();
        // Row i, column j of kv_b holds 10 * i + j.
        let rows = c.heads * (c.qk_nope + c.v_head);
        let kv: Vec<f32> = (0..rows * c.kv_lora)
            .map(|x| (10 * (x / c.kv_lora) + x % c.kv_lora) as f32)
            .collect();
        let k = split_kv_b(&kv, &c, true);
        // Head 1's key rows are 5 and 6: k_b[1][col][row] = kv[5 + row][col].
        assert_eq!(&k[8..10], &[50.0, 60.0]);
        assert_eq!(&k[10..12], &[51.0, 61.0]);
        let v = split_kv_b(&kv, &c, false);
        // Head 0's value rows are 2..5.
        assert_eq!(&v[..4], &[20.0, 21.0, 22.0, 23.0]);
        assert_eq!(v.len(), 2 * 3 * 4);
    }

    #[test]
    fn names_follow_llama_cpp() {
        let c = cfg();
        let n = |s: &str| gguf_name(s, &c);
        assert_eq!(
            n("model.layers.1.mlp.gate.e_score_correction_bias"),
            Some(Some("blk.1.exp_probs_b.bias".into()))
        );
        assert_eq!(n("model.layers.2.self_attn.o_proj.weight"), Some(None));
        assert_eq!(n("model.layers.0.self_attn.rotary_emb.x"), None);
        assert_eq!(
            expert_of("model.layers.3.mlp.experts.17.down_proj.weight"),
            Some((3, 17, "down_proj"))
        );
        assert_eq!(experts_name(3, "gate_proj"), "blk.3.ffn_gate_exps.weight");
    }

    #[test]
    fn a_model_without_query_lora_loads_at_any_layer_count() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/model/lite/config.json");
        let cfg: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(cfg["q_lora_rank"].is_null());
        let mut file = GgufFile::default();
        add_metadata(&mut file, &cfg, &path).unwrap();
        assert_eq!(
            file.get("deepseek2.attention.q_lora_rank"),
            Some(&Value::U32(0))
        );
    }
}
