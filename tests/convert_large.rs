//! Peak resident memory of `tquant convert` on a generated bf16 checkpoint of about 2.5 GB
//! (two shards; a fused 3-D expert tensor of 738 MB is the largest tensor), measured with
//! `/usr/bin/time -v`. Ignored by default (it writes 5 GB and takes minutes):
//!
//!   cargo test --release --test convert convert_large -- --ignored --nocapture
//!
//! `$TQUANT_LARGE_DIR` keeps the generated input between runs (default: a temporary directory).

use crate::support;

use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::{bf16_bytes, tquant_peak_rss, write_bf16_safetensors};
use tquant::formats::sample::Rng;

type Shard = Vec<(String, Vec<usize>)>;

fn layout() -> Vec<Shard> {
    let t = |n: &str, s: &[usize]| (n.to_string(), s.to_vec());
    let mut second = vec![t("model.layers.0.mlp.experts.down_proj", &[64, 2048, 1408])];
    for j in 0..32 {
        for (p, s) in [
            ("gate_proj", [1408, 2048]),
            ("up_proj", [1408, 2048]),
            ("down_proj", [2048, 1408]),
        ] {
            second.push(t(&format!("model.layers.1.mlp.experts.{j}.{p}.weight"), &s));
        }
    }
    second.push(t("lm_head.weight", &[102400, 2048]));
    second.push(t("model.norm.weight", &[2048]));
    vec![
        vec![
            t("model.embed_tokens.weight", &[102400, 2048]),
            t("model.layers.0.input_layernorm.weight", &[2048]),
            t("model.layers.0.self_attn.q_proj.weight", &[3072, 2048]),
            t(
                "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                &[576, 2048],
            ),
            t("model.layers.0.self_attn.kv_b_proj.weight", &[4096, 512]),
            t("model.layers.0.self_attn.o_proj.weight", &[2048, 2048]),
            t("model.layers.0.mlp.experts.gate_up_proj", &[64, 2816, 2048]),
        ],
        second,
    ]
}

/// Writes the shards, streaming: a pool of Student-t bf16 values read from random offsets.
fn generate(dir: &Path) -> (u64, u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(11);
    let pool: Vec<u8> = rng
        .student_t_vec(1 << 20, 5.0)
        .into_iter()
        .flat_map(|v| bf16_bytes(v * 0.02))
        .collect();
    let (mut total, mut largest) = (0u64, 0u64);
    let mut weight_map = BTreeMap::new();
    let shards = layout();
    for (k, tensors) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", k + 1, shards.len());
        for (name, shape) in tensors {
            largest = largest.max(shape.iter().product::<usize>() as u64 * 2);
            weight_map.insert(name.clone(), file.clone());
        }
        total += write_bf16_safetensors(&dir.join(&file), tensors, &pool, &mut rng);
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"deepseek_v2\"}").unwrap();
    (total, largest)
}

#[test]
#[ignore]
fn peak_memory_stays_below_the_largest_tensor() {
    if !support::time_available() {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = std::env::var("TQUANT_LARGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("in"));
    let (total, largest) = generate(&dir);
    let out = tmp.path().join("out");
    let (o, peak) = tquant_peak_rss([
        "convert".as_ref(),
        dir.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--json".as_ref(),
        "--threads".as_ref(),
        "2".as_ref(),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!(
        "input {:.2} GB in {} tensors, largest tensor {:.0} MB; peak RSS {:.0} MB ({:.2} x the largest tensor); {:.1} s, {:.1} MB/s on {} threads",
        total as f64 / 1e9,
        summary["tensors"].as_array().unwrap().len(),
        largest as f64 / 1e6,
        peak as f64 / 1e6,
        peak as f64 / largest as f64,
        summary["seconds"].as_f64().unwrap(),
        summary["mb_per_s"].as_f64().unwrap(),
        summary["threads"]
    );
    assert!(total > 2_000_000_000);
    assert!(
        peak < largest,
        "peak RSS {peak} is not below the largest tensor's {largest} bytes"
    );
}
