//! Peak resident memory of `tquant run` on a generated bf16 checkpoint of about 640 MB
//! (DeepSeek-V2-Lite attention and widths at hidden 2048: a dense layer of width 10944, then a
//! MoE layer of 16 routed experts of width 1408 and 2 shared; vocabulary 16384), measured with
//! `/usr/bin/time -v`. bf16 matrices are multiplied straight from the file's map, so the peak
//! stays near the file size (widened to f32 it would be about 2x + the file). The same file in
//! f16 holds the same: f16 matrices multiply from the map through the f16 kernels. Ignored by
//! default (each writes 640 MB):
//!
//!   cargo test --release --test model model_bf16_memory -- --ignored --nocapture
//!
//! `$TQUANT_LARGE_DIR` keeps the generated checkpoint between runs (default: a temporary
//! directory).

use crate::support;

use std::path::{Path, PathBuf};
use support::{bf16_bytes, f16_bytes, tquant_peak_rss, write_half_safetensors};
use tquant::convert::Dtype;
use tquant::formats::sample::Rng;
use tquant::model::synthetic::SyntheticSource;
use tquant::model::Config;

const CONFIG: &str = r#"{"model_type":"deepseek_v2","vocab_size":16384,"hidden_size":2048,
    "intermediate_size":10944,"moe_intermediate_size":1408,"num_hidden_layers":2,
    "num_attention_heads":16,"q_lora_rank":null,"kv_lora_rank":512,"qk_nope_head_dim":128,
    "qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":16,"n_shared_experts":2,
    "num_experts_per_tok":6,"first_k_dense_replace":1,"moe_layer_freq":1,
    "topk_method":"greedy","n_group":1,"topk_group":1,"routed_scaling_factor":1.0,
    "max_position_embeddings":4096,"rope_theta":10000,"torch_dtype":"bfloat16"}"#;

/// Writes config.json and model.safetensors (`dtype`, bf16 or f16; values from a pool of
/// Student-t samples at random offsets, norm weights 1). Returns the file's size.
fn generate(dir: &Path, dtype: Dtype) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let config = Config::from_json(CONFIG, "generated").unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = SyntheticSource::new(&config, 0, false)
        .shapes()
        .iter()
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    tensors.sort();
    let mut rng = Rng::new(5);
    let pool: Vec<u8> = rng
        .student_t_vec(1 << 20, 5.0)
        .into_iter()
        .flat_map(|v| match dtype {
            Dtype::F16 => f16_bytes(v * 0.02),
            _ => bf16_bytes(v * 0.02),
        })
        .collect();
    let file = dir.join("model.safetensors");
    write_half_safetensors(&file, &tensors, &pool, &mut rng, dtype);
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    std::fs::metadata(&file).unwrap().len()
}

#[test]
#[ignore]
fn run_peak_memory_stays_near_the_file_size() {
    peak_memory_stays_near_the_file_size(Dtype::BF16, "");
}

/// f16 matrices are not widened either: the same bound as bf16.
#[test]
#[ignore]
fn f16_run_peak_memory_stays_near_the_file_size() {
    peak_memory_stays_near_the_file_size(Dtype::F16, "-f16");
}

/// Runs the generated checkpoint of `dtype` in both modes under `/usr/bin/time -v`.
fn peak_memory_stays_near_the_file_size(dtype: Dtype, suffix: &str) {
    if !support::time_available() {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = std::env::var("TQUANT_LARGE_DIR")
        .map(|d| PathBuf::from(d + suffix))
        .unwrap_or_else(|_| tmp.path().join("in"));
    let size = generate(&dir, dtype);
    for fast in [false, true] {
        let mut args = vec![dir.as_os_str()];
        args.extend(
            [
                "--prompt-tokens",
                "1,2,3,4,5,6,7,8",
                "--max-tokens",
                "16",
                "--threads",
                "1",
            ]
            .map(std::ffi::OsStr::new),
        );
        // `run` defaults to fast kernels.
        args.push(if fast { "--fast" } else { "--exact" }.as_ref());
        let (o, peak) = tquant_peak_rss(std::iter::once("run".as_ref()).chain(args));
        let stderr = String::from_utf8_lossy(&o.stderr);
        let speed = stderr
            .lines()
            .filter(|l| l.contains("tok/s") || l.contains("tokens/s"))
            .collect::<Vec<_>>()
            .join(" | ");
        eprintln!(
            "{dtype:?} file {:.0} MB; peak RSS {:.0} MB ({:.2} x the file){}; {speed}",
            size as f64 / 1e6,
            peak as f64 / 1e6,
            peak as f64 / size as f64,
            if fast {
                " with --fast"
            } else {
                " with --exact"
            }
        );
        assert!(
            (peak as f64) <= 1.1 * size as f64,
            "peak RSS {peak} is above 1.1 x the file's {size} bytes"
        );
    }
}
