//! Small generated checkpoints for the converter's tests, written with the safetensors crate:
//! DeepSeek-style names, routed experts per expert or fused 3-D, several shards with an index.
#![allow(dead_code)]

use half::{bf16, f16};
use safetensors::{Dtype, View};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use tquant::formats::sample::Rng;

/// One tensor to write: its values are converted to `dtype`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

struct Bytes(Dtype, Vec<usize>, Vec<u8>);

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.0
    }
    fn shape(&self) -> &[usize] {
        &self.1
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.2)
    }
    fn data_len(&self) -> usize {
        self.2.len()
    }
}

pub fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        d => panic!("no encoder for {d}"),
    }
}

/// Writes `shards` as `model-0000k-of-0000n.safetensors` with an index (or `model.safetensors`
/// for one shard) and `config.json`.
pub fn write_checkpoint(dir: &Path, shards: &[Vec<Spec>], config: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (k, specs) in shards.iter().enumerate() {
        let file = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        };
        let data: Vec<(String, Bytes)> = specs
            .iter()
            .map(|s| {
                assert_eq!(
                    s.values.len(),
                    s.shape.iter().product::<usize>(),
                    "{}",
                    s.name
                );
                let b = encode(s.dtype, &s.values);
                total += b.len();
                weight_map.insert(s.name.clone(), file.clone());
                (s.name.clone(), Bytes(s.dtype, s.shape.clone(), b))
            })
            .collect();
        let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(
            data.iter().map(|(n, b)| (n.as_str(), b)),
            Some(meta),
            &dir.join(&file),
        )
        .unwrap();
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

pub const HIDDEN: usize = 64;
pub const EXPERTS: usize = 4;
pub const MOE_INTER: usize = 32;
/// Tail weight of each expert's values: expert 0 is heavy-tailed, the last one normal.
pub const EXPERT_NU: [f64; EXPERTS] = [2.5, 4.0, 8.0, f64::INFINITY];

fn t_values(rng: &mut Rng, n: usize, nu: f64, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let x = if nu.is_finite() {
                rng.student_t(nu)
            } else {
                rng.normal()
            };
            x as f32 * scale
        })
        .collect()
}

fn spec(rng: &mut Rng, name: &str, dtype: Dtype, shape: &[usize], nu: f64, scale: f32) -> Spec {
    Spec {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        values: t_values(rng, shape.iter().product(), nu, scale),
    }
}

/// A two-layer DeepSeek-style model: layer 0 dense MLP, layer 1 MoE with shared experts and
/// [`EXPERTS`] routed experts, per expert (`fused == false`) or fused 3-D. Three shards.
pub fn moe_model(fused: bool, seed: u64) -> Vec<Vec<Spec>> {
    let mut rng = Rng::new(seed);
    let r = &mut rng;
    let h = HIDDEN;
    let mut head = vec![
        spec(
            r,
            "model.embed_tokens.weight",
            Dtype::BF16,
            &[50, h],
            1e9,
            1.0,
        ),
        spec(r, "model.norm.weight", Dtype::F32, &[h], 1e9, 0.1),
    ];
    let mut layers = Vec::new();
    for i in 0..2 {
        let p = format!("model.layers.{i}");
        let attn_dtype = if i == 1 { Dtype::F16 } else { Dtype::BF16 };
        layers.extend([
            spec(
                r,
                &format!("{p}.input_layernorm.weight"),
                Dtype::F32,
                &[h],
                1e9,
                0.1,
            ),
            spec(
                r,
                &format!("{p}.post_attention_layernorm.weight"),
                Dtype::F32,
                &[h],
                1e9,
                0.1,
            ),
            spec(
                r,
                &format!("{p}.self_attn.q_proj.weight"),
                attn_dtype,
                &[96, h],
                6.0,
                0.05,
            ),
            spec(
                r,
                &format!("{p}.self_attn.kv_a_proj_with_mqa.weight"),
                attn_dtype,
                &[40, h],
                6.0,
                0.05,
            ),
            spec(
                r,
                &format!("{p}.self_attn.kv_a_layernorm.weight"),
                Dtype::F32,
                &[32],
                1e9,
                0.1,
            ),
            spec(
                r,
                &format!("{p}.self_attn.kv_b_proj.weight"),
                attn_dtype,
                &[128, 32],
                6.0,
                0.05,
            ),
            spec(
                r,
                &format!("{p}.self_attn.o_proj.weight"),
                attn_dtype,
                &[h, h],
                6.0,
                0.05,
            ),
            spec(
                r,
                &format!("{p}.self_attn.rotary_emb.inv_freq"),
                Dtype::F32,
                &[8],
                1e9,
                1.0,
            ),
        ]);
    }
    layers.extend([
        spec(
            r,
            "model.layers.0.mlp.gate_proj.weight",
            Dtype::BF16,
            &[96, h],
            5.0,
            0.05,
        ),
        spec(
            r,
            "model.layers.0.mlp.up_proj.weight",
            Dtype::BF16,
            &[96, h],
            5.0,
            0.05,
        ),
        spec(
            r,
            "model.layers.0.mlp.down_proj.weight",
            Dtype::BF16,
            &[h, 96],
            5.0,
            0.05,
        ),
        spec(
            r,
            "model.layers.1.mlp.gate.weight",
            Dtype::BF16,
            &[EXPERTS, h],
            1e9,
            0.1,
        ),
        spec(
            r,
            "model.layers.1.mlp.shared_experts.gate_proj.weight",
            Dtype::BF16,
            &[64, h],
            5.0,
            0.05,
        ),
        spec(
            r,
            "model.layers.1.mlp.shared_experts.up_proj.weight",
            Dtype::BF16,
            &[64, h],
            5.0,
            0.05,
        ),
        spec(
            r,
            "model.layers.1.mlp.shared_experts.down_proj.weight",
            Dtype::BF16,
            &[h, 64],
            5.0,
            0.05,
        ),
    ]);
    let mut experts = Vec::new();
    let expert_scale = |j: usize| 0.02 * (j + 1) as f32;
    if fused {
        let (mut gate_up, mut down) = (Vec::new(), Vec::new());
        for (j, &nu) in EXPERT_NU.iter().enumerate() {
            gate_up.extend(t_values(r, 2 * MOE_INTER * h, nu, expert_scale(j)));
            down.extend(t_values(r, h * MOE_INTER, nu, expert_scale(j)));
        }
        experts.push(Spec {
            name: "model.layers.1.mlp.experts.gate_up_proj".into(),
            dtype: Dtype::BF16,
            shape: vec![EXPERTS, 2 * MOE_INTER, h],
            values: gate_up,
        });
        experts.push(Spec {
            name: "model.layers.1.mlp.experts.down_proj".into(),
            dtype: Dtype::BF16,
            shape: vec![EXPERTS, h, MOE_INTER],
            values: down,
        });
    } else {
        for (j, &nu) in EXPERT_NU.iter().enumerate() {
            let p = format!("model.layers.1.mlp.experts.{j}");
            let s = expert_scale(j);
            experts.push(spec(
                r,
                &format!("{p}.gate_proj.weight"),
                Dtype::BF16,
                &[MOE_INTER, h],
                nu,
                s,
            ));
            experts.push(spec(
                r,
                &format!("{p}.up_proj.weight"),
                Dtype::BF16,
                &[MOE_INTER, h],
                nu,
                s,
            ));
            experts.push(spec(
                r,
                &format!("{p}.down_proj.weight"),
                Dtype::BF16,
                &[h, MOE_INTER],
                nu,
                s,
            ));
        }
    }
    head.push(spec(r, "lm_head.weight", Dtype::BF16, &[50, h], 1e9, 0.05));
    vec![head, layers, experts]
}

pub fn moe_config() -> Value {
    json!({
        "model_type": "deepseek_v2",
        "hidden_size": HIDDEN,
        "n_routed_experts": EXPERTS,
        "moe_intermediate_size": MOE_INTER,
        "num_hidden_layers": 2
    })
}

/// Every `.safetensors` file of a directory with its bytes, sorted by name.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}
