//! DeepSeek-V2 and -V3 `config.json` (V2, V2-Lite, V2.5, Coder-V2; V3, R1, Kimi-K2 as
//! `kimi_k2`, Moonlight): both rope spellings (the hub's `rope_theta` + `rope_scaling`, and
//! transformers v5's `rope_parameters`), plain or low-rank queries, routing options.
//!
//! Configs written by transformers for V3 omit `scoring_func` and `topk_method` (its model
//! hard-codes sigmoid + `noaux_tc`); they default from `model_type`.
//!
//! `head_dim` is deliberately ignored: transformers v5 writes `head_dim = qk_rope_head_dim`, which
//! is not the attention head width of MLA.

use crate::ModelError;
use serde_json::{Map, Value};
use std::path::Path;

/// How the router picks experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkMethod {
    /// Top-k of all routed experts (V2-Lite).
    Greedy,
    /// Top-k among the experts of the `topk_group` groups with the largest maximum score (V2).
    GroupLimitedGreedy,
    /// DeepSeek-V3's rule: sigmoid scores, a selection-only bias, groups ranked by the sum of
    /// their two best biased scores.
    NoauxTc,
}

/// The architecture generation, from `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `deepseek_v2`: softmax routing.
    V2,
    /// `deepseek_v3` or `kimi_k2`: sigmoid routing with `e_score_correction_bias`.
    V3,
}

/// Rotary embedding of the decoupled rope part.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Rotary base (`rope_theta`).
    pub theta: f64,
    /// Scaling of positions (`rope_scaling`).
    pub scaling: RopeScaling,
}

/// Rope scaling variants.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Positions as they are.
    None,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// YaRN (Peng et al. 2023) as DeepSeek's code and transformers implement it.
    Yarn(Yarn),
}

/// YaRN parameters; absent optional fields keep transformers' meaning of "absent".
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    /// Context extension factor.
    pub factor: f64,
    /// The context length trained before extension.
    pub original_max_position_embeddings: f64,
    /// Rotations per wavelength above which dimensions are not interpolated.
    pub beta_fast: f64,
    /// Rotations per wavelength below which dimensions are fully interpolated.
    pub beta_slow: f64,
    /// `mscale` of DeepSeek's attention scaling.
    pub mscale: Option<f64>,
    /// `mscale_all_dim` of DeepSeek's attention scaling.
    pub mscale_all_dim: Option<f64>,
    /// An explicit attention factor (transformers' `attention_factor`).
    pub attention_factor: Option<f64>,
    /// Whether the correction range is rounded out to whole dimensions (`truncate`).
    pub truncate: bool,
}

/// `yarn_get_mscale` of DeepSeek's code: `0.1 * m * ln(s) + 1` for `s > 1`, else 1.
pub fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

impl Yarn {
    /// The factor cos and sin are multiplied by (transformers' `attention_factor`; 1.0 for V2).
    pub fn rope_factor(&self) -> f64 {
        if let Some(a) = self.attention_factor {
            return a;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                yarn_mscale(self.factor, m) / yarn_mscale(self.factor, a)
            }
            _ => yarn_mscale(self.factor, 1.0),
        }
    }
}

/// The model configuration (only what the forward pass needs).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// DeepSeek-V2 or V3.
    pub family: Family,
    /// Tokens of the vocabulary (embedding rows).
    pub vocab_size: usize,
    /// Width of the hidden state.
    pub hidden_size: usize,
    /// Width of a dense MLP.
    pub intermediate_size: usize,
    /// Width of one expert's MLP.
    pub moe_intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// `None`: queries come from `q_proj` (V2-Lite); `Some(r)`: `q_b_proj(norm(q_a_proj(x)))`.
    pub q_lora_rank: Option<usize>,
    /// Width of the compressed KV latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key width without rotary embedding.
    pub qk_nope_head_dim: usize,
    /// Per-head query/key width with rotary embedding.
    pub qk_rope_head_dim: usize,
    /// Per-head value width.
    pub v_head_dim: usize,
    /// `None`: no MoE layers at all.
    pub n_routed_experts: Option<usize>,
    /// Shared experts of a MoE layer.
    pub n_shared_experts: usize,
    /// Routed experts per token.
    pub num_experts_per_tok: usize,
    /// Leading dense (non-MoE) layers.
    pub first_k_dense_replace: usize,
    /// Every this many layers after those is MoE.
    pub moe_layer_freq: usize,
    /// How routed experts are chosen.
    pub topk_method: TopkMethod,
    /// Expert groups (group-limited routing).
    pub n_group: usize,
    /// Groups a token may route to.
    pub topk_group: usize,
    /// Whether the chosen experts' weights are renormalised to sum to 1.
    pub norm_topk_prob: bool,
    /// Factor on the routed experts' output.
    pub routed_scaling_factor: f32,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f32,
    /// Whether the output projection is the embedding.
    pub tie_word_embeddings: bool,
    /// Positions the model was trained for.
    pub max_position_embeddings: usize,
    /// Rotary embedding.
    pub rope: RopeConfig,
    /// Multi-token-prediction layers stored after the decoder layers (`model.layers.{L}..`);
    /// the forward pass does not use them.
    pub num_nextn_predict_layers: usize,
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
}

impl Fields<'_> {
    fn err(&self, msg: String) -> ModelError {
        ModelError::Config {
            origin: self.origin.to_string(),
            msg,
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(format!("`{key}` must be a non-negative integer, got {v}"))
            }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("`{key}` is missing")))
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ModelError> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, ModelError> {
        opt_f64_in(self.map, key).map_err(|m| self.err(m))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(format!("`{key}` must be true or false, got {v}"))),
        }
    }

    fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str, ModelError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.err(format!("`{key}` must be a string, got {v}"))),
        }
    }
}

fn opt_f64_in(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a number, got {v}")),
    }
}

impl Config {
    /// Reads `dir/config.json` (or the file itself when `path` is a file).
    pub fn from_path(path: &Path) -> Result<Self, ModelError> {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| ModelError::Config {
            origin: file.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::from_json(&text, &file.display().to_string())
    }

    /// Parses the text of a `config.json`; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Config {
            origin: origin.to_string(),
            msg: format!("not valid JSON: {e}"),
        })?;
        Self::from_value(&value, origin)
    }

    /// Parses a `config.json` already read as JSON.
    pub fn from_value(value: &Value, origin: &str) -> Result<Self, ModelError> {
        let map = value.as_object().ok_or_else(|| ModelError::Config {
            origin: origin.to_string(),
            msg: "the top level is not a JSON object".into(),
        })?;
        let f = Fields { map, origin };
        let family = match f.str_or("model_type", "deepseek_v2")? {
            "deepseek_v2" => Family::V2,
            // Kimi-K2 is DeepSeek-V3's architecture under another name.
            "deepseek_v3" | "kimi_k2" => Family::V3,
            t => {
                return Err(f.err(format!(
                    "model_type `{t}` is not supported (deepseek_v2, deepseek_v3, kimi_k2)"
                )))
            }
        };
        let act = f.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return Err(f.err(format!("hidden_act `{act}` is not supported (only silu)")));
        }
        let topk_method = parse_routing(&f, family)?;
        if family == Family::V3 && !f.bool_or("rope_interleave", true)? {
            return Err(f.err(
                "rope_interleave false is not supported (DeepSeek-V3 checkpoints rotate \
                 interleaved pairs)"
                    .into(),
            ));
        }
        // Absent routing keys take the defaults of transformers' config class for the family.
        let v3 = family == Family::V3;
        let (groups, topk_groups, norm, scale) = if v3 {
            (8, 4, true, 2.5)
        } else {
            (1, 1, false, 1.0)
        };
        let mtp = match f.opt_usize("num_nextn_predict_layers")? {
            Some(n) => n,
            None => f.usize_or("num_mtp_layers", 0)?,
        };
        let max_position_embeddings = f.usize_or("max_position_embeddings", 2048)?;
        let c = Config {
            family,
            vocab_size: f.usize("vocab_size")?,
            hidden_size: f.usize("hidden_size")?,
            intermediate_size: f.usize("intermediate_size")?,
            moe_intermediate_size: f.usize_or("moe_intermediate_size", 0)?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads: f.usize("num_attention_heads")?,
            q_lora_rank: f.opt_usize("q_lora_rank")?,
            kv_lora_rank: f.usize("kv_lora_rank")?,
            qk_nope_head_dim: f.usize("qk_nope_head_dim")?,
            qk_rope_head_dim: f.usize("qk_rope_head_dim")?,
            v_head_dim: f.usize("v_head_dim")?,
            n_routed_experts: f.opt_usize("n_routed_experts")?,
            n_shared_experts: f.usize_or("n_shared_experts", 0)?,
            num_experts_per_tok: f.usize_or("num_experts_per_tok", 0)?,
            first_k_dense_replace: f.usize_or("first_k_dense_replace", 0)?,
            moe_layer_freq: f.usize_or("moe_layer_freq", 1)?,
            topk_method,
            n_group: f.usize_or("n_group", groups)?,
            topk_group: f.usize_or("topk_group", topk_groups)?,
            norm_topk_prob: f.bool_or("norm_topk_prob", norm)?,
            routed_scaling_factor: f.opt_f64("routed_scaling_factor")?.unwrap_or(scale) as f32,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            max_position_embeddings,
            rope: parse_rope(&f, max_position_embeddings)?,
            num_nextn_predict_layers: mtp,
        };
        c.validate(origin)?;
        Ok(c)
    }

    fn validate(&self, origin: &str) -> Result<(), ModelError> {
        let err = |msg: String| ModelError::Config {
            origin: origin.to_string(),
            msg,
        };
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("v_head_dim", self.v_head_dim),
            ("moe_layer_freq", self.moe_layer_freq),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(err(format!("`{k}` must be positive")));
            }
        }
        if self.qk_rope_head_dim % 2 != 0 {
            return Err(err(format!(
                "qk_rope_head_dim {} is odd: rope rotates pairs",
                self.qk_rope_head_dim
            )));
        }
        if self.q_lora_rank == Some(0) {
            return Err(err("`q_lora_rank` is 0 (use null for plain q_proj)".into()));
        }
        if let Some(e) = self.n_routed_experts {
            if self.has_moe_layers() {
                let k = self.num_experts_per_tok;
                if k == 0 || k > e {
                    return Err(err(format!(
                        "num_experts_per_tok {k} must be in 1..={e} (n_routed_experts)"
                    )));
                }
                if self.moe_intermediate_size == 0 {
                    return Err(err("`moe_intermediate_size` is missing or 0".into()));
                }
                if self.n_group == 0 || e % self.n_group != 0 {
                    return Err(err(format!(
                        "n_group {} does not divide n_routed_experts {e}",
                        self.n_group
                    )));
                }
                if self.topk_method != TopkMethod::Greedy
                    && (self.topk_group == 0
                        || self.topk_group > self.n_group
                        || self.topk_group * (e / self.n_group) < k)
                {
                    return Err(err(format!(
                        "topk_group {} of n_group {} leaves fewer than {k} experts",
                        self.topk_group, self.n_group
                    )));
                }
            }
        }
        Ok(())
    }

    /// Width of one query/key head: nope + rope.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Values cached per token and layer: the normalised latent and the roped shared key.
    pub fn kv_cache_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Layer `i` is MoE iff there are routed experts, `i >= first_k_dense_replace` and
    /// `i % moe_layer_freq == 0` (DeepSeek's modeling code).
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.n_routed_experts.is_some_and(|e| e > 0)
            && i >= self.first_k_dense_replace
            && i % self.moe_layer_freq == 0
    }

    fn has_moe_layers(&self) -> bool {
        (0..self.num_hidden_layers).any(|i| self.is_moe_layer(i))
    }

    /// Softmax scale: `qk_head_dim^-0.5`, times `mscale(factor, mscale_all_dim)^2` under YaRN.
    pub fn softmax_scale(&self) -> f32 {
        let mut s = (self.qk_head_dim() as f64).powf(-0.5);
        if let RopeScaling::Yarn(y) = &self.rope.scaling {
            if let Some(a) = y.mscale_all_dim.filter(|&a| a != 0.0) {
                let m = yarn_mscale(y.factor, a);
                s *= m * m;
            }
        }
        s as f32
    }
}

/// `scoring_func` and `topk_method`, checked against the family: V2 routes with softmax
/// (greedy or group-limited), V3 with sigmoid and `noaux_tc` only (as its modeling code).
fn parse_routing(f: &Fields<'_>, family: Family) -> Result<TopkMethod, ModelError> {
    let (scoring_default, method_default) = match family {
        Family::V2 => ("softmax", "greedy"),
        Family::V3 => ("sigmoid", "noaux_tc"),
    };
    let scoring = f.str_or("scoring_func", scoring_default)?;
    let method = f.str_or("topk_method", method_default)?;
    match (family, scoring, method) {
        (Family::V2, "softmax", "greedy") => Ok(TopkMethod::Greedy),
        (Family::V2, "softmax", "group_limited_greedy") => Ok(TopkMethod::GroupLimitedGreedy),
        (Family::V3, "sigmoid", "noaux_tc") => Ok(TopkMethod::NoauxTc),
        (Family::V2, _, _) => Err(f.err(format!(
            "scoring_func `{scoring}` with topk_method `{method}` is not supported for \
             deepseek_v2 (softmax with greedy or group_limited_greedy)"
        ))),
        (Family::V3, _, _) => Err(f.err(format!(
            "scoring_func `{scoring}` with topk_method `{method}` is not supported for \
             deepseek_v3 (sigmoid with noaux_tc)"
        ))),
    }
}

fn parse_rope(f: &Fields<'_>, max_pos: usize) -> Result<RopeConfig, ModelError> {
    let top_theta = f.opt_f64("rope_theta")?;
    // transformers v5 folds theta and the scaling into `rope_parameters`; the hub keeps them apart.
    let params = match f.map.get("rope_parameters") {
        Some(Value::Object(m)) => Some(m),
        None | Some(Value::Null) => match f.map.get("rope_scaling") {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) => None,
            Some(v) => return Err(f.err(format!("`rope_scaling` must be an object, got {v}"))),
        },
        Some(v) => return Err(f.err(format!("`rope_parameters` must be an object, got {v}"))),
    };
    let Some(p) = params else {
        return Ok(RopeConfig {
            theta: top_theta.unwrap_or(10000.0),
            scaling: RopeScaling::None,
        });
    };
    let num = |k: &str| opt_f64_in(p, k).map_err(|m| f.err(format!("rope: {m}")));
    let theta = num("rope_theta")?.or(top_theta).unwrap_or(10000.0);
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?.ok_or_else(|| f.err("linear rope needs `factor`".into()))?,
        },
        "yarn" => {
            let factor = num("factor")?.ok_or_else(|| f.err("yarn rope needs `factor`".into()))?;
            let orig = num("original_max_position_embeddings")?
                .or(f.opt_f64("original_max_position_embeddings")?)
                .unwrap_or(max_pos as f64);
            // transformers: `get("beta_fast") or 32`, so 0 means the default too.
            let or_default = |v: Option<f64>, d: f64| v.filter(|&x| x != 0.0).unwrap_or(d);
            RopeScaling::Yarn(Yarn {
                factor,
                original_max_position_embeddings: orig,
                beta_fast: or_default(num("beta_fast")?, 32.0),
                beta_slow: or_default(num("beta_slow")?, 1.0),
                mscale: num("mscale")?,
                mscale_all_dim: num("mscale_all_dim")?,
                attention_factor: num("attention_factor")?,
                truncate: p.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            })
        }
        other => {
            return Err(f.err(format!(
                "rope type `{other}` is not supported (default, linear, yarn)"
            )))
        }
    };
    if theta <= 0.0 || !theta.is_finite() {
        return Err(f.err(format!("rope theta {theta} must be positive")));
    }
    Ok(RopeConfig { theta, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LITE_V5: &str = r#"{"model_type":"deepseek_v2","vocab_size":256,"hidden_size":192,
        "intermediate_size":512,"moe_intermediate_size":96,"num_hidden_layers":3,
        "num_attention_heads":6,"q_lora_rank":null,"kv_lora_rank":48,"qk_nope_head_dim":32,
        "qk_rope_head_dim":16,"v_head_dim":32,"head_dim":16,"n_routed_experts":8,
        "n_shared_experts":2,"num_experts_per_tok":2,"first_k_dense_replace":1,
        "n_group":1,"topk_group":1,"topk_method":"greedy","routed_scaling_factor":1.0,
        "rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}}"#;

    fn v2_hub() -> String {
        r#"{"model_type":"deepseek_v2","vocab_size":102400,"hidden_size":5120,
        "intermediate_size":12288,"moe_intermediate_size":1536,"num_hidden_layers":60,
        "num_attention_heads":128,"q_lora_rank":1536,"kv_lora_rank":512,"qk_nope_head_dim":128,
        "qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":160,"n_shared_experts":2,
        "num_experts_per_tok":6,"first_k_dense_replace":1,"moe_layer_freq":1,
        "topk_method":"group_limited_greedy","n_group":8,"topk_group":3,
        "routed_scaling_factor":16.0,"norm_topk_prob":false,"max_position_embeddings":163840,
        "rope_theta":10000,"rope_scaling":{"type":"yarn","factor":40,
        "original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":0.707,
        "mscale_all_dim":0.707}}"#
            .to_string()
    }

    #[test]
    fn parses_v5_rope_parameters_and_ignores_head_dim() {
        let c = Config::from_json(LITE_V5, "lite").unwrap();
        assert_eq!(c.q_lora_rank, None);
        assert_eq!(c.qk_head_dim(), 48);
        assert_eq!(c.rope.theta, 10000.0);
        assert_eq!(c.rope.scaling, RopeScaling::None);
        assert!(!c.is_moe_layer(0) && c.is_moe_layer(1) && c.is_moe_layer(2));
        assert!((c.softmax_scale() - 48f32.powf(-0.5)).abs() < 1e-7);
    }

    #[test]
    fn parses_hub_rope_scaling_with_yarn_softmax_factor() {
        let c = Config::from_json(&v2_hub(), "v2").unwrap();
        assert_eq!(c.q_lora_rank, Some(1536));
        assert_eq!(c.topk_method, TopkMethod::GroupLimitedGreedy);
        let RopeScaling::Yarn(y) = &c.rope.scaling else {
            panic!("yarn expected")
        };
        assert_eq!(y.original_max_position_embeddings, 4096.0);
        assert!((y.rope_factor() - 1.0).abs() < 1e-12);
        // reference/deepseek.md section 3.4: 192^-0.5 * 1.589626 = 0.1147214
        assert!((c.softmax_scale() - 0.1147214).abs() < 1e-6);
    }

    #[test]
    fn moe_layer_frequency_follows_deepseek_rule() {
        let text = v2_hub().replace("\"moe_layer_freq\":1", "\"moe_layer_freq\":2");
        let c = Config::from_json(&text, "v2").unwrap();
        let moe: Vec<bool> = (0..5).map(|i| c.is_moe_layer(i)).collect();
        assert_eq!(moe, [false, false, true, false, true]);
    }

    #[test]
    fn rejects_bad_configs_with_the_origin_named() {
        let bad = LITE_V5.replace("\"num_experts_per_tok\":2", "\"num_experts_per_tok\":9");
        let e = Config::from_json(&bad, "cfg.json").unwrap_err().to_string();
        assert!(
            e.contains("cfg.json") && e.contains("num_experts_per_tok"),
            "{e}"
        );
        let bad = LITE_V5.replace("\"kv_lora_rank\":48", "\"kv_lora_rank\":\"x\"");
        assert!(Config::from_json(&bad, "c").is_err());
        let bad = LITE_V5.replace("\"rope_type\":\"default\"", "\"rope_type\":\"llama3\"");
        assert!(Config::from_json(&bad, "c").is_err());
        assert!(Config::from_json("[1]", "c").is_err());
    }

    /// DeepSeek-V3's hub config (R1 has the same keys), as published.
    const V3_HUB: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],"model_type":"deepseek_v3",
        "vocab_size":129280,"hidden_size":7168,"intermediate_size":18432,
        "moe_intermediate_size":2048,"num_hidden_layers":61,"num_attention_heads":128,
        "num_key_value_heads":128,"n_shared_experts":1,"n_routed_experts":256,
        "routed_scaling_factor":2.5,"kv_lora_rank":512,"q_lora_rank":1536,"qk_rope_head_dim":64,
        "v_head_dim":128,"qk_nope_head_dim":128,"topk_method":"noaux_tc","n_group":8,
        "topk_group":4,"num_experts_per_tok":8,"moe_layer_freq":1,"first_k_dense_replace":3,
        "norm_topk_prob":true,"scoring_func":"sigmoid","hidden_act":"silu",
        "max_position_embeddings":163840,"rms_norm_eps":1e-06,"rope_theta":10000,
        "rope_scaling":{"beta_fast":32,"beta_slow":1,"factor":40,"mscale":1.0,
        "mscale_all_dim":1.0,"original_max_position_embeddings":4096,"type":"yarn"},
        "num_nextn_predict_layers":1,"tie_word_embeddings":false,"torch_dtype":"bfloat16",
        "quantization_config":{"activation_scheme":"dynamic","fmt":"e4m3",
        "quant_method":"fp8","weight_block_size":[128,128]}}"#;

    const KIMI_K2: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],"model_type":"kimi_k2",
        "vocab_size":163840,"hidden_size":7168,"intermediate_size":18432,
        "moe_intermediate_size":2048,"num_hidden_layers":61,"num_attention_heads":64,
        "num_key_value_heads":64,"n_shared_experts":1,"n_routed_experts":384,
        "routed_scaling_factor":2.827,"kv_lora_rank":512,"q_lora_rank":1536,
        "qk_rope_head_dim":64,"v_head_dim":128,"qk_nope_head_dim":128,"topk_method":"noaux_tc",
        "n_group":1,"topk_group":1,"num_experts_per_tok":8,"moe_layer_freq":1,
        "first_k_dense_replace":1,"norm_topk_prob":true,"scoring_func":"sigmoid",
        "aux_loss_alpha":0.001,"seq_aux":true,"hidden_act":"silu",
        "max_position_embeddings":131072,"rms_norm_eps":1e-06,"rope_theta":50000.0,
        "rope_scaling":{"beta_fast":1.0,"beta_slow":1.0,"factor":32.0,"mscale":1.0,
        "mscale_all_dim":1.0,"original_max_position_embeddings":4096,"type":"yarn"},
        "num_nextn_predict_layers":0,"tie_word_embeddings":false}"#;

    const MOONLIGHT: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],
        "model_type":"deepseek_v3","vocab_size":163840,"hidden_size":2048,
        "intermediate_size":11264,"moe_intermediate_size":1408,"num_hidden_layers":27,
        "num_attention_heads":16,"num_key_value_heads":16,"n_shared_experts":2,
        "n_routed_experts":64,"ep_size":1,"routed_scaling_factor":2.446,"kv_lora_rank":512,
        "q_lora_rank":null,"qk_rope_head_dim":64,"v_head_dim":128,"qk_nope_head_dim":128,
        "topk_method":"noaux_tc","n_group":1,"topk_group":1,"num_experts_per_tok":6,
        "moe_layer_freq":1,"first_k_dense_replace":1,"norm_topk_prob":true,
        "scoring_func":"sigmoid","aux_loss_alpha":0.001,"seq_aux":true,"hidden_act":"silu",
        "max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":50000.0,
        "rope_scaling":null,"num_nextn_predict_layers":0,"tie_word_embeddings":false}"#;

    fn yarn_of(c: &Config) -> &Yarn {
        match &c.rope.scaling {
            RopeScaling::Yarn(y) => y,
            s => panic!("yarn expected, got {s:?}"),
        }
    }

    #[test]
    fn parses_deepseek_v3_hub_config() {
        let c = Config::from_json(V3_HUB, "v3").unwrap();
        assert_eq!(c.family, Family::V3);
        assert_eq!(c.topk_method, TopkMethod::NoauxTc);
        assert_eq!((c.n_group, c.topk_group, c.num_experts_per_tok), (8, 4, 8));
        assert!(c.norm_topk_prob);
        assert_eq!(c.routed_scaling_factor, 2.5);
        assert_eq!(c.first_k_dense_replace, 3);
        assert!(!c.is_moe_layer(2) && c.is_moe_layer(3) && c.is_moe_layer(60));
        assert_eq!(c.num_nextn_predict_layers, 1);
        assert_eq!(c.rms_norm_eps, 1e-6);
        let y = yarn_of(&c);
        assert_eq!((y.factor, y.beta_fast, y.beta_slow), (40.0, 32.0, 1.0));
        assert!((y.rope_factor() - 1.0).abs() < 1e-12);
        // reference/deepseek-v3.md section 3.1
        assert!(
            (c.softmax_scale() - 0.13523378).abs() < 1e-7,
            "{}",
            c.softmax_scale()
        );
    }

    #[test]
    fn parses_kimi_k2_as_deepseek_v3() {
        let c = Config::from_json(KIMI_K2, "kimi").unwrap();
        assert_eq!(c.family, Family::V3);
        assert_eq!(c.topk_method, TopkMethod::NoauxTc);
        assert_eq!((c.n_group, c.topk_group), (1, 1));
        assert_eq!(c.n_routed_experts, Some(384));
        assert_eq!(c.routed_scaling_factor, 2.827);
        assert_eq!(c.num_nextn_predict_layers, 0);
        assert_eq!(c.rope.theta, 50000.0);
        let y = yarn_of(&c);
        assert_eq!((y.factor, y.beta_fast, y.beta_slow), (32.0, 1.0, 1.0));
        assert!(
            (c.softmax_scale() - 0.1308608).abs() < 1e-7,
            "{}",
            c.softmax_scale()
        );
        // reference/deepseek-v3.md section 3.2: low 19, high 20, a hard switch.
        let r = crate::rope::Rope::new(&c.rope, c.qk_rope_head_dim);
        let base = |i: usize| 50000f32.powf(-((2 * i) as f32) / 64.0);
        for (i, &f) in r.inv_freq().iter().enumerate() {
            let ratio = base(i) / f;
            let want = if i <= 19 { 1.0 } else { 32.0 };
            assert!(
                (ratio - want).abs() < 1e-3 * want,
                "pair {i}: ratio {ratio}"
            );
        }
    }

    #[test]
    fn parses_moonlight_with_plain_rope() {
        let c = Config::from_json(MOONLIGHT, "moonlight").unwrap();
        assert_eq!(c.family, Family::V3);
        assert_eq!(c.q_lora_rank, None);
        assert_eq!(c.rope.scaling, RopeScaling::None);
        assert_eq!(c.rope.theta, 50000.0);
        assert_eq!(c.rms_norm_eps, 1e-5);
        assert_eq!((c.n_shared_experts, c.num_experts_per_tok), (2, 6));
        assert!(
            (c.softmax_scale() - 0.07216878).abs() < 1e-7,
            "{}",
            c.softmax_scale()
        );
    }

    #[test]
    fn v3_routing_defaults_from_model_type_when_keys_are_absent() {
        // transformers writes V3 configs without scoring_func / topk_method, with num_mtp_layers.
        let text = V3_HUB
            .replace(r#""topk_method":"noaux_tc","#, "")
            .replace(r#""scoring_func":"sigmoid","#, "")
            .replace(r#""num_nextn_predict_layers":1"#, r#""num_mtp_layers":2"#);
        let c = Config::from_json(&text, "v3").unwrap();
        assert_eq!(c.topk_method, TopkMethod::NoauxTc);
        assert_eq!(c.num_nextn_predict_layers, 2);
        // V2's defaults stay softmax + greedy.
        let c = Config::from_json(LITE_V5, "lite").unwrap();
        assert_eq!((c.family, c.topk_method), (Family::V2, TopkMethod::Greedy));
        assert_eq!(c.num_nextn_predict_layers, 0);
    }

    #[test]
    fn routing_rule_must_fit_the_family() {
        let bad = V3_HUB.replace(r#""scoring_func":"sigmoid""#, r#""scoring_func":"softmax""#);
        let e = Config::from_json(&bad, "v3.json").unwrap_err().to_string();
        assert!(e.contains("v3.json") && e.contains("softmax"), "{e}");
        let bad = v2_hub().replace("group_limited_greedy", "noaux_tc");
        let e = Config::from_json(&bad, "v2.json").unwrap_err().to_string();
        assert!(e.contains("noaux_tc") && e.contains("deepseek_v2"), "{e}");
        let bad = V3_HUB.replace(r#""topk_group":4"#, r#""topk_group":0"#);
        assert!(Config::from_json(&bad, "v3").is_err());
        let bad = V3_HUB.replace(r#""model_type":"deepseek_v3""#, r#""model_type":"llama""#);
        let e = Config::from_json(&bad, "v3").unwrap_err().to_string();
        assert!(e.contains("llama"), "{e}");
        let bad = V3_HUB.replace(r#""tie_word_embeddings""#, r#""rope_interleave":false,"x""#);
        let e = Config::from_json(&bad, "v3").unwrap_err().to_string();
        assert!(e.contains("rope_interleave"), "{e}");
    }
}
