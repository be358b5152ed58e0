//! Peak resident memory and speed of `tquant convert --format nf4` on one full-size DeepSeek-V3
//! MoE layer stored as FP8 (F8_E4M3 with 128x128 block scales): 256 routed experts and a shared
//! one of [2048, 7168] gate/up and [7168, 2048] down, V3's attention shapes, its router (BF16
//! [256, 7168] and an F32 bias), a small embedding and head; about 11.5 GB in three shards, the
//! routed experts' scales in another shard than their weights. The converter dequantizes one
//! matrix at a time, so its peak stays near the largest matrix as f32 (o_proj [7168, 16384],
//! 470 MB) beside an expert matrix, far below the 11.5 GB input; converting the experts alone
//! (`--drop` the attention) stays about one expert's three matrices as f32 (176 MB). Ignored by
//! default (it writes about 18 GB and
//! takes minutes):
//!
//!   cargo test --release --test convert convert_fp8_large -- --ignored --nocapture
//!
//! `$TQUANT_LARGE_DIR` keeps the generated input between runs (default: a temporary directory).

use crate::support;

use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use support::{bf16_bytes, tquant_peak_rss};
use tquant::convert::fp8::e4m3_to_f32;
use tquant::convert::header::{serialize_header, OutEntry};
use tquant::convert::Dtype;
use tquant::formats::sample::Rng;

const HIDDEN: usize = 7168;
const EXPERT_INTER: usize = 2048;
const EXPERTS: usize = 256;
const LAYER: &str = "model.layers.3";

/// What a generated tensor holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// F8_E4M3 codes (with a `_scale_inv` tensor written wherever the layout puts it).
    Fp8,
    /// F32 block scales.
    Scales,
    Bf16,
    /// BF16 ones (norms).
    Ones,
    /// F32 zeros (the router's correction bias).
    F32,
}

type Tensor = (String, Kind, Vec<usize>);

fn t(name: String, kind: Kind, shape: &[usize]) -> Tensor {
    (name, kind, shape.to_vec())
}

fn scales_of(name: &str, shape: &[usize]) -> Tensor {
    t(
        format!("{name}_scale_inv"),
        Kind::Scales,
        &[shape[0].div_ceil(128), shape[1].div_ceil(128)],
    )
}

/// Three shards: attention, router, shared expert and experts 0..127; experts 128..255; the
/// rest with every routed expert's scales (a reader must pair them through the index).
fn layout() -> Vec<Vec<Tensor>> {
    let mut shards = vec![Vec::new(), Vec::new(), Vec::new()];
    let attn = [
        ("q_a_proj", [1536, HIDDEN]),
        ("q_b_proj", [24576, 1536]),
        ("kv_a_proj_with_mqa", [576, HIDDEN]),
        ("kv_b_proj", [32768, 512]),
        ("o_proj", [HIDDEN, 16384]),
    ];
    for (p, s) in attn {
        let name = format!("{LAYER}.self_attn.{p}.weight");
        shards[0].push(scales_of(&name, &s));
        shards[0].push(t(name, Kind::Fp8, &s));
    }
    for (n, d) in [("q_a_layernorm", 1536), ("kv_a_layernorm", 512)] {
        shards[0].push(t(format!("{LAYER}.self_attn.{n}.weight"), Kind::Ones, &[d]));
    }
    for n in ["input_layernorm", "post_attention_layernorm"] {
        shards[0].push(t(format!("{LAYER}.{n}.weight"), Kind::Ones, &[HIDDEN]));
    }
    shards[0].push(t(
        format!("{LAYER}.mlp.gate.weight"),
        Kind::Bf16,
        &[EXPERTS, HIDDEN],
    ));
    shards[0].push(t(
        format!("{LAYER}.mlp.gate.e_score_correction_bias"),
        Kind::F32,
        &[EXPERTS],
    ));
    let mlp = [
        ("gate_proj", [EXPERT_INTER, HIDDEN]),
        ("up_proj", [EXPERT_INTER, HIDDEN]),
        ("down_proj", [HIDDEN, EXPERT_INTER]),
    ];
    for (p, s) in mlp {
        let name = format!("{LAYER}.mlp.shared_experts.{p}.weight");
        shards[0].push(scales_of(&name, &s));
        shards[0].push(t(name, Kind::Fp8, &s));
    }
    for e in 0..EXPERTS {
        for (p, s) in mlp {
            let name = format!("{LAYER}.mlp.experts.{e}.{p}.weight");
            shards[2].push(scales_of(&name, &s));
            shards[usize::from(e >= EXPERTS / 2)].push(t(name, Kind::Fp8, &s));
        }
    }
    shards[2].push(t(
        "model.embed_tokens.weight".into(),
        Kind::Bf16,
        &[1024, HIDDEN],
    ));
    shards[2].push(t("lm_head.weight".into(), Kind::Bf16, &[1024, HIDDEN]));
    shards[2].push(t("model.norm.weight".into(), Kind::Ones, &[HIDDEN]));
    shards
}

fn elem(kind: Kind) -> (Dtype, usize) {
    match kind {
        Kind::Fp8 => (Dtype::F8_E4M3, 1),
        Kind::Scales | Kind::F32 => (Dtype::F32, 4),
        Kind::Bf16 | Kind::Ones => (Dtype::BF16, 2),
    }
}

/// The E4M3 code nearest to `v` (|v| <= 448).
fn e4m3_code(v: f32, positive: &[(f32, u8)]) -> u8 {
    let a = v.abs().min(448.0);
    let i = positive.partition_point(|(x, _)| *x < a);
    let lo = positive[i.saturating_sub(1)];
    let c = match positive.get(i) {
        Some(hi) if hi.0 - a < a - lo.0 => hi.1,
        _ => lo.1,
    };
    if v.is_sign_negative() {
        c | 0x80
    } else {
        c
    }
}

/// Writes one shard, streaming: FP8 codes and bf16 values from pools at random offsets, block
/// scales around 2e-4. Returns the data bytes written.
fn write_shard(path: &Path, tensors: &[Tensor], pools: (&[u8], &[u8]), rng: &mut Rng) -> u64 {
    let (mut entries, mut pos) = (Vec::new(), 0u64);
    for (name, kind, shape) in tensors {
        let (dtype, size) = elem(*kind);
        let len = (shape.iter().product::<usize>() * size) as u64;
        entries.push(OutEntry {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            begin: pos,
            end: pos + len,
        });
        pos += len;
    }
    let header = serialize_header(&entries, &BTreeMap::new(), 0);
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path).unwrap());
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    for (_, kind, shape) in tensors {
        let n = shape.iter().product::<usize>();
        match kind {
            Kind::Fp8 | Kind::Bf16 => {
                let pool = if *kind == Kind::Fp8 { pools.0 } else { pools.1 };
                let step = elem(*kind).1;
                let mut left = n * step;
                while left > 0 {
                    let start = rng.below((pool.len() / step) as u64) as usize * step;
                    let take = (pool.len() - start).min(left);
                    f.write_all(&pool[start..start + take]).unwrap();
                    left -= take;
                }
            }
            Kind::Scales => {
                for _ in 0..n {
                    let s = (2e-4 * (0.5 + rng.uniform())) as f32;
                    f.write_all(&s.to_le_bytes()).unwrap();
                }
            }
            Kind::Ones => (0..n).for_each(|_| f.write_all(&bf16_bytes(1.0)).unwrap()),
            Kind::F32 => (0..n).for_each(|_| f.write_all(&0f32.to_le_bytes()).unwrap()),
        }
    }
    f.flush().unwrap();
    pos
}

/// DeepSeek-V3's config.json (its `quantization_config` included), one layer of it.
fn config() -> serde_json::Value {
    json!({
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "hidden_size": HIDDEN,
        "intermediate_size": 18432,
        "moe_intermediate_size": EXPERT_INTER,
        "n_routed_experts": EXPERTS,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "n_group": 8,
        "topk_group": 4,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "norm_topk_prob": true,
        "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 3,
        "num_hidden_layers": 4,
        "num_nextn_predict_layers": 1,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "vocab_size": 1024,
        "rms_norm_eps": 1e-6,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128]
        }
    })
}

fn generate(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(3);
    let mut positive: Vec<(f32, u8)> = (0..0x7Fu8).map(|c| (e4m3_to_f32(c), c)).collect();
    positive.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Student-t values over the E4M3 range, as a block scaled to amax = 448 would hold.
    let fp8_pool: Vec<u8> = rng
        .student_t_vec(1 << 22, 5.0)
        .into_iter()
        .map(|v| e4m3_code(v * 40.0, &positive))
        .collect();
    let bf16_pool: Vec<u8> = rng
        .student_t_vec(1 << 20, 5.0)
        .into_iter()
        .flat_map(|v| bf16_bytes(v * 0.02))
        .collect();
    let shards = layout();
    let mut weight_map = BTreeMap::new();
    let mut total = 0;
    for (k, tensors) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:06}.safetensors", k + 1, shards.len());
        for (name, _, _) in tensors {
            weight_map.insert(name.clone(), file.clone());
        }
        total += write_shard(&dir.join(&file), tensors, (&fp8_pool, &bf16_pool), &mut rng);
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), config().to_string()).unwrap();
    total
}

#[test]
#[ignore]
fn converting_a_v3_fp8_moe_layer_holds_a_few_matrices_at_a_time() {
    if !support::time_available() {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = std::env::var("TQUANT_LARGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("in"));
    let started = std::time::Instant::now();
    let total = if dir.join("config.json").exists() {
        0
    } else {
        generate(&dir)
    };
    eprintln!(
        "generated {:.2} GB in {:.1} s",
        total as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let expert_matrix = (EXPERT_INTER * HIDDEN * 4) as u64;
    let expert_f32 = 3 * expert_matrix;
    // The largest matrix of the layer is the attention output, o_proj [7168, 16384].
    let largest_f32 = (HIDDEN * 16384 * 4) as u64;
    let (peak, summary) = measure(&dir, &tmp.path().join("out"), &[]);
    let ckpt = tquant::convert::Checkpoint::open(tmp.path().join("out")).unwrap();
    assert!(ckpt.raw_names().all(|n| !n.ends_with("_scale_inv")));
    assert_eq!(
        summary["quantized"].as_u64().unwrap() as usize,
        5 + 3 * (EXPERTS + 1)
    );
    assert!(summary["params"].as_u64().unwrap() > 5_000_000_000);
    drop(ckpt);
    std::fs::remove_dir_all(tmp.path().join("out")).unwrap();
    // Both workers may hold a matrix: the largest, and an expert's beside it.
    assert!(
        peak < largest_f32 + 2 * expert_matrix + (100 << 20),
        "peak RSS {peak} is not within o_proj's f32 ({largest_f32} bytes) and two expert matrices"
    );
    // The experts alone (attention dropped): a few expert matrices at a time.
    let (peak, _) = measure(
        &dir,
        &tmp.path().join("experts"),
        &["--drop", "*.self_attn.*"],
    );
    assert!(
        peak < expert_f32 * 3 / 2,
        "peak RSS {peak} is not about one expert's f32 weights ({expert_f32} bytes)"
    );
}

/// Converts `dir` to nf4 on two threads under `/usr/bin/time -v`: the peak RSS and the summary.
fn measure(dir: &Path, out: &Path, extra: &[&str]) -> (u64, serde_json::Value) {
    let mut args = vec![
        "convert".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(["--format", "nf4", "--json", "--threads", "2"].map(std::ffi::OsStr::new));
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let (o, peak) = tquant_peak_rss(args);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let expert_f32 = (3 * EXPERT_INTER * HIDDEN * 4) as u64;
    let params = summary["params"].as_u64().unwrap();
    let seconds = summary["seconds"].as_f64().unwrap();
    eprintln!(
        "convert {extra:?}: input {:.2} GB ({} tensors, {:.2} G parameters) -> {:.2} GB; peak RSS \
         {:.0} MB ({:.2} x one expert's f32 weights, {:.0} MB); {:.1} s, {:.1} MB/s of input, \
         {:.1} M parameters/s on {} threads",
        summary["input_bytes"].as_u64().unwrap() as f64 / 1e9,
        summary["tensors"].as_array().unwrap().len(),
        params as f64 / 1e9,
        summary["output_bytes"].as_u64().unwrap() as f64 / 1e9,
        peak as f64 / 1e6,
        peak as f64 / expert_f32 as f64,
        expert_f32 as f64 / 1e6,
        seconds,
        summary["mb_per_s"].as_f64().unwrap(),
        params as f64 / 1e6 / seconds,
        summary["threads"]
    );
    (peak, summary)
}
