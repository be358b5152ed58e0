//! Peak resident memory of `tquant convert --calibrate` on generated DeepSeek-V2-shaped bf16
//! models of 2 and 8 decoder layers (hidden 1024, 16 routed experts of 512, random weights),
//! measured with `/usr/bin/time -v`. The calibration runs one decoder layer at a time, so the
//! peak should not grow with the number of layers. Ignored by default (minutes):
//!
//!   cargo test --release --test calibrate_large -- --ignored --nocapture

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::{bf16_bytes, max_rss_bytes, write_bf16_safetensors};
use tquant::formats::sample::Rng;

const HIDDEN: usize = 1024;
const HEADS: usize = 8;
const KV_RANK: usize = 256;
const NOPE: usize = 64;
const ROPE: usize = 32;
const V_DIM: usize = 64;
const EXPERTS: usize = 16;
const MOE_INTER: usize = 512;
const DENSE_INTER: usize = 2816;
const VOCAB: usize = 256;

fn tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    let mut t = |n: String, s: &[usize]| v.push((n, s.to_vec()));
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        t(format!("{p}.input_layernorm.weight"), &[HIDDEN]);
        t(format!("{p}.post_attention_layernorm.weight"), &[HIDDEN]);
        let a = format!("{p}.self_attn");
        t(
            format!("{a}.q_proj.weight"),
            &[HEADS * (NOPE + ROPE), HIDDEN],
        );
        t(
            format!("{a}.kv_a_proj_with_mqa.weight"),
            &[KV_RANK + ROPE, HIDDEN],
        );
        t(format!("{a}.kv_a_layernorm.weight"), &[KV_RANK]);
        t(
            format!("{a}.kv_b_proj.weight"),
            &[HEADS * (NOPE + V_DIM), KV_RANK],
        );
        t(format!("{a}.o_proj.weight"), &[HIDDEN, HEADS * V_DIM]);
        let m = format!("{p}.mlp");
        let mlp = |t: &mut dyn FnMut(String, &[usize]), pre: &str, inter: usize| {
            t(format!("{pre}.gate_proj.weight"), &[inter, HIDDEN]);
            t(format!("{pre}.up_proj.weight"), &[inter, HIDDEN]);
            t(format!("{pre}.down_proj.weight"), &[HIDDEN, inter]);
        };
        if i == 0 {
            mlp(&mut t, &m, DENSE_INTER);
        } else {
            t(format!("{m}.gate.weight"), &[EXPERTS, HIDDEN]);
            for j in 0..EXPERTS {
                mlp(&mut t, &format!("{m}.experts.{j}"), MOE_INTER);
            }
            mlp(&mut t, &format!("{m}.shared_experts"), MOE_INTER);
        }
    }
    t("model.norm.weight".to_string(), &[HIDDEN]);
    t("lm_head.weight".to_string(), &[VOCAB, HIDDEN]);
    v
}

fn config(layers: usize) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite/config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
    let set = |c: &mut Value, k: &str, v: Value| c[k] = v;
    set(&mut c, "hidden_size", json!(HIDDEN));
    set(&mut c, "intermediate_size", json!(DENSE_INTER));
    set(&mut c, "moe_intermediate_size", json!(MOE_INTER));
    set(&mut c, "n_routed_experts", json!(EXPERTS));
    set(&mut c, "n_shared_experts", json!(1));
    set(&mut c, "num_attention_heads", json!(HEADS));
    set(&mut c, "num_key_value_heads", json!(HEADS));
    set(&mut c, "kv_lora_rank", json!(KV_RANK));
    set(&mut c, "qk_nope_head_dim", json!(NOPE));
    set(&mut c, "qk_rope_head_dim", json!(ROPE));
    set(&mut c, "qk_head_dim", json!(NOPE + ROPE));
    set(&mut c, "head_dim", json!(ROPE));
    set(&mut c, "v_head_dim", json!(V_DIM));
    set(&mut c, "num_hidden_layers", json!(layers));
    c
}

/// Writes the model (one file): norms 1, other weights normal with standard deviation 0.02.
fn generate(dir: &Path, layers: usize) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(5);
    let pool: Vec<u8> = (0..1 << 20)
        .flat_map(|_| bf16_bytes(rng.normal() as f32 * 0.02))
        .collect();
    let file = dir.join("model.safetensors");
    let pos = write_bf16_safetensors(&file, &tensors(layers), &pool, &mut rng);
    std::fs::write(dir.join("config.json"), config(layers).to_string()).unwrap();
    pos
}

/// Converts with calibration under `/usr/bin/time -v`: (peak RSS bytes, seconds).
fn convert_peak(input: &Path, out: &Path) -> (u64, f64) {
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model/heldout_head.txt");
    let started = std::time::Instant::now();
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_tquant"))
        .arg("convert")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--format", "nf4", "--threads", "2", "--calibrate"])
        .arg(&text)
        .args(["--calibrate-bytes", "8192"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    (max_rss_bytes(&stderr), started.elapsed().as_secs_f64())
}

#[test]
#[ignore]
fn calibration_memory_does_not_grow_with_the_number_of_layers() {
    if !Path::new("/usr/bin/time").exists() {
        eprintln!("note: /usr/bin/time is not available; skipping the peak-memory measurement");
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut peaks = Vec::new();
    for layers in [2, 8] {
        let input = tmp.path().join(format!("in{layers}"));
        let bytes = generate(&input, layers);
        let (peak, secs) = convert_peak(&input, &tmp.path().join(format!("out{layers}")));
        eprintln!(
            "{layers} layers: {:.0} MB bf16 ({:.0} MB as f32); peak RSS {:.0} MB; {secs:.0} s",
            bytes as f64 / 1e6,
            2.0 * bytes as f64 / 1e6,
            peak as f64 / 1e6
        );
        peaks.push((bytes, peak));
        std::fs::remove_dir_all(&input).unwrap();
    }
    let ((small_in, small_peak), (big_in, big_peak)) = (peaks[0], peaks[1]);
    assert!(big_in > 3 * small_in);
    // Four times the layers, at most a quarter more memory; and less than the float model.
    assert!(
        (big_peak as f64) < 1.25 * small_peak as f64,
        "{small_peak} -> {big_peak}"
    );
    assert!(
        big_peak < 2 * big_in,
        "{big_peak} vs the f32 model {}",
        2 * big_in
    );
}
