//! Peak resident memory of `tquant convert --calibrate`, measured with `/usr/bin/time -v`, on
//! generated bf16 models with random weights:
//!
//! - DeepSeek-V2-shaped, 2 and 8 decoder layers (hidden 1024, 16 routed experts of 512): the
//!   calibration runs one decoder layer at a time, so the peak does not grow with the layers;
//! - DeepSeek-V3-shaped, one MoE layer of 256 routed experts of 512 on hidden 512: each routed
//!   expert is a stage of its own (read, widened to f32, run, its statistics collected and its
//!   matrices quantized, all dropped before the next), so the peak stays well under the
//!   layer's f32 size and its statistics; and the same arithmetic at DeepSeek-V3's size.
//!
//! Ignored by default (minutes):
//!
//!   cargo test --release --test calibrate calibrate_large -- --ignored --nocapture

use crate::support;

use serde_json::{json, Value};
use std::path::Path;
use support::{bf16_bytes, tquant_peak_rss, write_bf16_safetensors};
use tquant::formats::sample::Rng;

/// The generated model's sizes.
#[derive(Clone, Copy)]
struct Shape {
    layers: usize,
    hidden: usize,
    experts: usize,
    moe_inter: usize,
    dense_inter: usize,
    /// DeepSeek-V3 routing (sigmoid, groups, `e_score_correction_bias`) instead of V2's.
    v3: bool,
}

/// DeepSeek-V2-shaped: 16 routed experts of 512 on hidden 1024.
const V2_SHAPE: Shape = Shape {
    layers: 2,
    hidden: 1024,
    experts: 16,
    moe_inter: 512,
    dense_inter: 2816,
    v3: false,
};

const HEADS: usize = 8;
const KV_RANK: usize = 256;
const NOPE: usize = 64;
const ROPE: usize = 32;
const V_DIM: usize = 64;
const VOCAB: usize = 256;

fn tensors(s: Shape) -> Vec<(String, Vec<usize>)> {
    let hidden = s.hidden;
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, hidden])];
    let mut t = |n: String, s: &[usize]| v.push((n, s.to_vec()));
    for i in 0..s.layers {
        let p = format!("model.layers.{i}");
        t(format!("{p}.input_layernorm.weight"), &[hidden]);
        t(format!("{p}.post_attention_layernorm.weight"), &[hidden]);
        let a = format!("{p}.self_attn");
        t(
            format!("{a}.q_proj.weight"),
            &[HEADS * (NOPE + ROPE), hidden],
        );
        t(
            format!("{a}.kv_a_proj_with_mqa.weight"),
            &[KV_RANK + ROPE, hidden],
        );
        t(format!("{a}.kv_a_layernorm.weight"), &[KV_RANK]);
        t(
            format!("{a}.kv_b_proj.weight"),
            &[HEADS * (NOPE + V_DIM), KV_RANK],
        );
        t(format!("{a}.o_proj.weight"), &[hidden, HEADS * V_DIM]);
        let m = format!("{p}.mlp");
        let mlp = |t: &mut dyn FnMut(String, &[usize]), pre: &str, inter: usize| {
            t(format!("{pre}.gate_proj.weight"), &[inter, hidden]);
            t(format!("{pre}.up_proj.weight"), &[inter, hidden]);
            t(format!("{pre}.down_proj.weight"), &[hidden, inter]);
        };
        if i == 0 {
            mlp(&mut t, &m, s.dense_inter);
        } else {
            t(format!("{m}.gate.weight"), &[s.experts, hidden]);
            if s.v3 {
                t(format!("{m}.gate.e_score_correction_bias"), &[s.experts]);
            }
            for j in 0..s.experts {
                mlp(&mut t, &format!("{m}.experts.{j}"), s.moe_inter);
            }
            mlp(&mut t, &format!("{m}.shared_experts"), s.moe_inter);
        }
    }
    t("model.norm.weight".to_string(), &[hidden]);
    t("lm_head.weight".to_string(), &[VOCAB, hidden]);
    v
}

fn config(s: Shape) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite/config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
    let set = |c: &mut Value, k: &str, v: Value| c[k] = v;
    set(&mut c, "hidden_size", json!(s.hidden));
    set(&mut c, "intermediate_size", json!(s.dense_inter));
    set(&mut c, "moe_intermediate_size", json!(s.moe_inter));
    set(&mut c, "n_routed_experts", json!(s.experts));
    set(&mut c, "n_shared_experts", json!(1));
    set(&mut c, "num_attention_heads", json!(HEADS));
    set(&mut c, "num_key_value_heads", json!(HEADS));
    set(&mut c, "kv_lora_rank", json!(KV_RANK));
    set(&mut c, "qk_nope_head_dim", json!(NOPE));
    set(&mut c, "qk_rope_head_dim", json!(ROPE));
    set(&mut c, "qk_head_dim", json!(NOPE + ROPE));
    set(&mut c, "head_dim", json!(ROPE));
    set(&mut c, "v_head_dim", json!(V_DIM));
    set(&mut c, "num_hidden_layers", json!(s.layers));
    if s.v3 {
        // As transformers writes a V3 config: no scoring_func / topk_method.
        let m = c.as_object_mut().unwrap();
        m.remove("topk_method");
        set(&mut c, "model_type", json!("deepseek_v3"));
        set(&mut c, "architectures", json!(["DeepseekV3ForCausalLM"]));
        set(&mut c, "n_group", json!(8));
        set(&mut c, "topk_group", json!(4));
        set(&mut c, "num_experts_per_tok", json!(8));
        set(&mut c, "norm_topk_prob", json!(true));
        set(&mut c, "routed_scaling_factor", json!(2.5));
        set(&mut c, "num_nextn_predict_layers", json!(0));
    }
    c
}

/// Writes the model (one file): norms 1, other weights normal with standard deviation 0.02.
fn generate(dir: &Path, s: Shape) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(5);
    let pool: Vec<u8> = (0..1 << 20)
        .flat_map(|_| bf16_bytes(rng.normal() as f32 * 0.02))
        .collect();
    let file = dir.join("model.safetensors");
    let pos = write_bf16_safetensors(&file, &tensors(s), &pool, &mut rng);
    std::fs::write(dir.join("config.json"), config(s).to_string()).unwrap();
    pos
}

/// Converts with calibration under `/usr/bin/time -v`: (peak RSS bytes, seconds).
fn convert_peak(input: &Path, out: &Path) -> (u64, f64) {
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model/heldout_head.txt");
    let started = std::time::Instant::now();
    let mut args = vec![
        "convert".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ];
    args.extend(["--format", "nf4", "--threads", "2", "--calibrate"].map(std::ffi::OsStr::new));
    args.push(text.as_os_str());
    args.extend(["--calibrate-bytes", "8192"].map(std::ffi::OsStr::new));
    let (_, peak) = tquant_peak_rss(args);
    (peak, started.elapsed().as_secs_f64())
}

#[test]
#[ignore]
fn calibration_memory_does_not_grow_with_the_number_of_layers() {
    if !support::time_available() {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut peaks = Vec::new();
    for layers in [2, 8] {
        let input = tmp.path().join(format!("in{layers}"));
        let bytes = generate(&input, Shape { layers, ..V2_SHAPE });
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

#[test]
#[ignore]
fn calibration_holds_one_routed_expert_at_a_time() {
    if !support::time_available() {
        return;
    }
    let shape = Shape {
        layers: 2,
        hidden: 512,
        experts: 256,
        moe_inter: 512,
        dense_inter: 1024,
        v3: true,
    };
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let input = tmp.path().join("v3");
    let bytes = generate(&input, shape);
    let experts_f32 = (shape.experts * 3 * shape.hidden * shape.moe_inter * 4) as u64;
    // The layer's statistics: an f64 second moment per expert input (hidden) and down_proj
    // input (moe_inter), all held at once when a stage was a whole layer.
    let stats = (shape.experts * (shape.hidden.pow(2) + shape.moe_inter.pow(2)) * 8) as u64;
    let expert_stage = (shape.hidden.pow(2) + shape.moe_inter.pow(2)) as u64 * 8;
    let (peak, secs) = convert_peak(&input, &tmp.path().join("out"));
    eprintln!(
        "V3-shaped, {} experts: {:.0} MB bf16 on disk; the MoE layer's routed experts {:.0} MB \
         as f32, their statistics {:.0} MB (one expert's {:.1} MB); peak RSS {:.0} MB, against \
         {:.0} MB with the whole layer as one stage; {secs:.0} s",
        shape.experts,
        bytes as f64 / 1e6,
        experts_f32 as f64 / 1e6,
        stats as f64 / 1e6,
        expert_stage as f64 / 1e6,
        peak as f64 / 1e6,
        PEAK_WITH_LAYER_STAGES as f64 / 1e6,
    );
    v3_scale_figures();
    // Neither the routed experts as f32 nor their statistics may be held together (holding the
    // experts put the peak at 2101 MB here, holding the layer's statistics at 1159 MB).
    assert!(
        peak < stats / 4,
        "peak {peak} vs the layer's statistics {stats}"
    );
}

/// Peak RSS of the measurement above when a MoE layer's statistics were collected whole.
const PEAK_WITH_LAYER_STAGES: u64 = 1_159_000_000;

/// DeepSeek-V3's hub config (the keys the model reads).
const V3_HUB: &str = r#"{"architectures":["DeepseekV3ForCausalLM"],"model_type":"deepseek_v3",
    "vocab_size":129280,"hidden_size":7168,"intermediate_size":18432,
    "moe_intermediate_size":2048,"num_hidden_layers":61,"num_attention_heads":128,
    "num_key_value_heads":128,"n_shared_experts":1,"n_routed_experts":256,
    "routed_scaling_factor":2.5,"kv_lora_rank":512,"q_lora_rank":1536,"qk_rope_head_dim":64,
    "v_head_dim":128,"qk_nope_head_dim":128,"topk_method":"noaux_tc","n_group":8,
    "topk_group":4,"num_experts_per_tok":8,"moe_layer_freq":1,"first_k_dense_replace":3,
    "norm_topk_prob":true,"scoring_func":"sigmoid","hidden_act":"silu",
    "max_position_embeddings":163840,"rms_norm_eps":1e-06,"rope_theta":10000,
    "num_nextn_predict_layers":1,"tie_word_embeddings":false,"torch_dtype":"bfloat16"}"#;

/// What the stages hold at DeepSeek-V3's size, by arithmetic from its config: statistics (f64
/// second moments; the GPTQ factors double them while a stage's matrices are quantized) and
/// f32 weights.
fn v3_scale_figures() {
    use tquant::model::calibrate::{largest_stage, stage_statistics_bytes};
    use tquant::model::{Config, Stage};
    let c = Config::from_json(V3_HUB, "DeepSeek-V3").unwrap();
    let gb = |b: u64| b as f64 / 1e9;
    let layer = 3;
    let expert = stage_statistics_bytes(&c, Stage::Expert(layer, 0));
    let expert_f32 = 3 * c.hidden_size as u64 * c.moe_intermediate_size as u64 * 4;
    let attention = stage_statistics_bytes(&c, Stage::Attention(layer));
    let whole_layer: u64 = Stage::all(&c)
        .into_iter()
        .filter(|s| s.layer() == layer)
        .map(|s| stage_statistics_bytes(&c, s))
        .sum();
    let (largest, largest_bytes) = largest_stage(&c).unwrap();
    eprintln!(
        "DeepSeek-V3 by arithmetic: a routed expert's stage {:.3} GB of statistics ({:.3} GB \
         with GPTQ factors) and {:.3} GB of f32 weights; a MoE layer's attention stage {:.2} GB \
         of statistics; the largest stage ({largest:?}) {:.2} GB; a MoE layer as one stage \
         {:.1} GB",
        gb(expert),
        gb(2 * expert),
        gb(expert_f32),
        gb(attention),
        gb(largest_bytes),
        gb(whole_layer),
    );
    assert_eq!(expert, (7168u64.pow(2) + 2048u64.pow(2)) * 8);
}
