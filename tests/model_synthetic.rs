//! Larger random models (sizes where the runner's parallel branches run): prefill and decode,
//! naive and absorbed attention, one and two threads all agree.

use crate::support;

use support::max_diff;
use tquant::model::synthetic::SyntheticSource;
use tquant::model::{AttentionPath, Config, Logits, Model, Options};

fn config() -> Config {
    let text = r#"{"model_type":"deepseek_v2","vocab_size":64,"hidden_size":256,
        "intermediate_size":384,"moe_intermediate_size":64,"num_hidden_layers":2,
        "num_attention_heads":8,"q_lora_rank":96,"kv_lora_rank":128,"qk_nope_head_dim":32,
        "qk_rope_head_dim":16,"v_head_dim":32,"n_routed_experts":16,"n_shared_experts":1,
        "num_experts_per_tok":4,"first_k_dense_replace":1,"topk_method":"group_limited_greedy",
        "n_group":4,"topk_group":2,"routed_scaling_factor":2.0,"max_position_embeddings":4096,
        "rope_theta":10000,"rope_scaling":{"type":"yarn","factor":8,
        "original_max_position_embeddings":512,"mscale":1.0,"mscale_all_dim":1.0}}"#;
    Config::from_json(text, "synthetic").unwrap()
}

fn tokens() -> Vec<u32> {
    (0..48u32).map(|i| (i * 29 + 3) % 64).collect()
}

fn model(path: AttentionPath, threads: usize) -> Model {
    let c = config();
    let src = SyntheticSource::new(&c, 11, true);
    let opts = Options {
        attention: path,
        threads,
        ..Options::default()
    };
    Model::from_source(c, &src, opts).unwrap()
}

fn prefill(m: &Model) -> Vec<f32> {
    let mut cache = m.new_cache();
    m.forward(&tokens(), &mut cache, Logits::All).unwrap()
}

#[test]
fn naive_absorbed_and_thread_counts_agree() {
    let base = prefill(&model(AttentionPath::Naive, 1));
    let spread = base.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
    assert!(spread > 0.1, "logits carry signal: {spread}");
    for (path, threads) in [
        (AttentionPath::Naive, 2),
        (AttentionPath::Absorbed, 1),
        (AttentionPath::Absorbed, 2),
    ] {
        let d = max_diff(&base, &prefill(&model(path, threads)));
        assert!(d < 1e-4, "{path:?} {threads} threads: {d}");
    }
}

#[test]
fn decode_steps_match_prefill() {
    let m = model(AttentionPath::Auto, 2);
    let all = prefill(&m);
    let t = tokens();
    let mut cache = m.new_cache();
    m.forward(&t[..30], &mut cache, Logits::Last).unwrap();
    for (i, &tok) in t.iter().enumerate().skip(30) {
        let l = m.forward(&[tok], &mut cache, Logits::Last).unwrap();
        let d = max_diff(&l, &all[i * 64..(i + 1) * 64]);
        assert!(d < 1e-4, "position {i}: {d}");
    }
    // A truncated cache continues as if the later tokens had never been seen.
    cache.truncate(40);
    let l = m.forward(&t[40..41], &mut cache, Logits::Last).unwrap();
    assert!(max_diff(&l, &all[40 * 64..41 * 64]) < 1e-4);
}
