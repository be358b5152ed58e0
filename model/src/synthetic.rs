//! Random weights with a config's tensor names and shapes, made on request: for benchmarks of
//! model sizes no fixture holds, and for tests of layouts (per-expert or fused experts).

use crate::config::Config;
use crate::weights::{TensorData, TensorSource};
use crate::ModelError;
use std::collections::HashMap;

/// A checkpoint of random weights: matrices uniform with variance `1 / fan_in` (activations
/// keep their scale through the layers), norm weights 1. Each tensor is generated from the seed
/// and its name, so asking twice gives the same values.
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    shapes: HashMap<String, Vec<usize>>,
    seed: u64,
}

impl SyntheticSource {
    /// Every tensor `config` needs; routed experts per expert, or fused 3-D when `fused`.
    pub fn new(c: &Config, seed: u64, fused: bool) -> Self {
        let mut s = HashMap::new();
        let mut put = |name: String, shape: &[usize]| {
            s.insert(name, shape.to_vec());
        };
        let (h, n, qk) = (c.hidden_size, c.num_attention_heads, c.qk_head_dim());
        put("model.embed_tokens.weight".into(), &[c.vocab_size, h]);
        put("lm_head.weight".into(), &[c.vocab_size, h]);
        put("model.norm.weight".into(), &[h]);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            put(format!("{p}.input_layernorm.weight"), &[h]);
            put(format!("{p}.post_attention_layernorm.weight"), &[h]);
            let a = format!("{p}.self_attn");
            match c.q_lora_rank {
                None => put(format!("{a}.q_proj.weight"), &[n * qk, h]),
                Some(r) => {
                    put(format!("{a}.q_a_proj.weight"), &[r, h]);
                    put(format!("{a}.q_a_layernorm.weight"), &[r]);
                    put(format!("{a}.q_b_proj.weight"), &[n * qk, r]);
                }
            }
            let lora = c.kv_lora_rank;
            put(
                format!("{a}.kv_a_proj_with_mqa.weight"),
                &[lora + c.qk_rope_head_dim, h],
            );
            put(format!("{a}.kv_a_layernorm.weight"), &[lora]);
            put(
                format!("{a}.kv_b_proj.weight"),
                &[n * (c.qk_nope_head_dim + c.v_head_dim), lora],
            );
            put(format!("{a}.o_proj.weight"), &[h, n * c.v_head_dim]);
            let m = format!("{p}.mlp");
            let mut mlp = |prefix: String, w: usize| {
                put(format!("{prefix}.gate_proj.weight"), &[w, h]);
                put(format!("{prefix}.up_proj.weight"), &[w, h]);
                put(format!("{prefix}.down_proj.weight"), &[h, w]);
            };
            if !c.is_moe_layer(i) {
                mlp(m.clone(), c.intermediate_size);
                continue;
            }
            let (e, ie) = (c.n_routed_experts.unwrap_or(0), c.moe_intermediate_size);
            if c.n_shared_experts > 0 {
                mlp(format!("{m}.shared_experts"), ie * c.n_shared_experts);
            }
            if !fused {
                for j in 0..e {
                    mlp(format!("{m}.experts.{j}"), ie);
                }
            }
            put(format!("{m}.gate.weight"), &[e, h]);
            if fused {
                put(format!("{m}.experts.gate_up_proj"), &[e, 2 * ie, h]);
                put(format!("{m}.experts.down_proj"), &[e, h, ie]);
            }
        }
        Self { shapes: s, seed }
    }

    /// Names and shapes of every tensor.
    pub fn shapes(&self) -> &HashMap<String, Vec<usize>> {
        &self.shapes
    }
}

/// splitmix64: a fast, well-mixed stream for bulk random values.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TensorSource for SyntheticSource {
    fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        let shape = self
            .shapes
            .get(name)
            .ok_or_else(|| ModelError::tensor(name, "not in the synthetic checkpoint"))?
            .clone();
        let numel: usize = shape.iter().product();
        if shape.len() == 1 {
            return Ok(TensorData::Dense {
                shape,
                values: vec![1.0; numel],
            });
        }
        // Uniform(-a, a) has variance a^2 / 3; a = sqrt(3 / fan_in) gives 1 / fan_in.
        let a = (3.0 / *shape.last().unwrap_or(&1) as f64).sqrt() as f32;
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        let values = (0..numel)
            .map(|_| {
                let u = (splitmix(&mut state) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
                a * (2.0 * u - 1.0)
            })
            .collect();
        Ok(TensorData::Dense { shape, values })
    }
}
