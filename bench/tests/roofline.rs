//! The roofline benchmark's byte count on the tiny-lite shape, against figures worked out by
//! hand, against the model's own count of active weights, and with the router's real choices.

use std::collections::HashMap;
use std::path::Path;
use tquant_bench::roofline::{
    token_bytes, ExpertCounter, GeneratedSource, HeadFormat, RooflineError,
};
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
use tquant_model::{Config, Logits, Model, Options};

fn tiny_lite() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-lite");
    Config::from_path(&dir).unwrap()
}

/// tiny-lite (hidden 192, 6 heads, nope 32, rope 16, v 32, kv_lora 48, dense width 512, 8
/// experts of width 96, top-2, 2 shared, 3 layers, vocab 256) as nf4, block 16, f16 scales:
/// 0.5 + 2/16 = 0.625 bytes per quantized weight, 2 per bf16 weight, 4 per norm value.
fn generated(c: &Config) -> (Model, HashMap<String, usize>) {
    let nf4: Format = "nf4".parse().unwrap();
    let q = BlockQuantizer {
        block: BlockSize::Elements(16),
        scale_dtype: ScaleDtype::F16,
    };
    // The hand counts below take the head and embeddings at bf16.
    let src = GeneratedSource::new(c, 3, nf4, q)
        .unwrap()
        .with_head(HeadFormat::Bf16);
    let model = Model::from_source(c.clone(), &src, Options::default()).unwrap();
    (model, src.stored_bytes())
}

#[test]
fn bytes_per_token_on_tiny_lite_match_the_hand_count() {
    let c = tiny_lite();
    let (model, stored) = generated(&c);
    let experts = [0.0, 2.0, 2.0];
    let b = token_bytes(&c, &stored, &experts).unwrap();
    // Per layer: q_proj 288x192, kv_a 64x192, the value half of kv_b (192x48) packed, o_proj
    // 192x192, plus W_UK^T as f32 (6 heads x 48 x 32).
    let attention =
        (288 * 192 + 64 * 192 + 192 * 48 + 192 * 192) as f64 * 0.625 + (6 * 48 * 32 * 4) as f64;
    assert_eq!(attention, 107_904.0);
    assert_eq!(b.attention, 3.0 * attention);
    assert_eq!(b.dense_mlp, (3 * 512 * 192) as f64 * 0.625);
    assert_eq!(b.router, 2.0 * (8 * 192 * 2) as f64);
    assert_eq!(b.shared_experts, 2.0 * (3 * 192 * 192) as f64 * 0.625);
    assert_eq!(b.routed_experts, 2.0 * 2.0 * (3 * 96 * 192) as f64 * 0.625);
    // input, post-attention and kv_a norms per layer, and the final norm.
    assert_eq!(b.norms, ((3 * (192 + 192 + 48) + 192) * 4) as f64);
    assert_eq!(b.head, (256 * 192 * 2) as f64);
    assert_eq!(b.embedding_row, (192 * 2) as f64);
    assert_eq!(b.total(), 895_296.0);

    // The model's own count reads kv_b whole and knows no norms, embedding row or W_UK^T.
    let kv_b_key_half = 3.0 * (192 * 48) as f64 * 0.625;
    let w_uk_t = 3.0 * (6 * 48 * 32 * 4) as f64;
    assert_eq!(
        b.total() - b.norms - b.embedding_row + kv_b_key_half - w_uk_t,
        model.active_weight_bytes() as f64
    );
}

/// With `--head q8_0` the head and the embedding row are counted at 1 + 2/32 bytes a weight
/// (int8 codes, an f16 scale per 32), the rest as before; the model multiplies and looks up
/// through them.
#[test]
fn a_q8_0_head_and_embeddings_are_counted_at_their_stored_width() {
    let c = tiny_lite();
    let nf4: Format = "nf4".parse().unwrap();
    let q = BlockQuantizer {
        block: BlockSize::Elements(16),
        scale_dtype: ScaleDtype::F16,
    };
    let src = GeneratedSource::new(&c, 3, nf4, q)
        .unwrap()
        .with_head(HeadFormat::Q8_0);
    let model = Model::from_source(c.clone(), &src, Options::default()).unwrap();
    let b = token_bytes(&c, &src.stored_bytes(), &[0.0, 2.0, 2.0]).unwrap();
    assert_eq!(b.head, (256 * (192 + 2 * 192 / 32)) as f64);
    assert_eq!(b.embedding_row, (192 + 2 * 192 / 32) as f64);
    assert_eq!(
        b.total(),
        895_296.0 - (256 + 1) as f64 * (192 * 2 - 204) as f64
    );
    let mut cache = model.new_cache();
    let logits = model.forward(&[1, 2, 3], &mut cache, Logits::Last).unwrap();
    assert_eq!(logits.len(), 256);
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn routed_experts_counted_from_a_real_decode() {
    let c = tiny_lite();
    let (model, _) = generated(&c);
    let mut cache = model.new_cache();
    model
        .forward(&[1, 2, 3, 4], &mut cache, Logits::Last)
        .unwrap();
    let counter = ExpertCounter::new(c.num_hidden_layers);
    for t in 0..5u32 {
        model
            .install(|| model.forward_observed(&[t + 10], &mut cache, Logits::Last, &counter))
            .unwrap();
    }
    // One token at a time: top-2 distinct experts per MoE layer, none in the dense layer.
    assert_eq!(counter.counts(), [0, 10, 10]);
}

#[test]
fn byte_count_refuses_missing_tensors_and_wrong_layer_counts() {
    let c = tiny_lite();
    let (_, mut stored) = generated(&c);
    match token_bytes(&c, &stored, &[0.0, 2.0]) {
        Err(e @ RooflineError::ExpertCounts { .. }) => {
            assert!(
                e.to_string().contains("2 expert counts for 3 layers"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    stored.remove("model.layers.1.mlp.gate.weight");
    match token_bytes(&c, &stored, &[0.0, 2.0, 2.0]) {
        Err(e @ RooflineError::Unloaded { .. }) => {
            assert!(
                e.to_string().contains("model.layers.1.mlp.gate.weight"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_refuses_an_empty_measurement_before_building_the_model() {
    let spec = tquant_bench::roofline::Spec {
        threads: Vec::new(),
        ..Default::default()
    };
    match tquant_bench::roofline::run(&spec) {
        Err(e @ RooflineError::NothingToMeasure) => {
            assert!(e.to_string().contains("thread counts"), "{e}")
        }
        other => panic!("{:?}", other.map(|r| r.rows)),
    }
}

/// Fast mode's absorbed attention reads `W_UK^T` as q8_0 (1 + 2/32 bytes a weight) instead of
/// f32, the byte count follows, and its decode stays as close to the naive path (which
/// expands the packed `kv_b_proj`) as fast mode's int8 activations allow.
#[test]
fn fast_mode_reads_the_transposed_key_projection_as_q8_0() {
    use tquant_model::{AttentionPath, Mode};
    let c = tiny_lite();
    let (mut model, stored) = generated(&c);
    assert_eq!(model.absorbed_key_bytes(), 3 * 6 * 48 * 32 * 4);
    let exact = token_bytes(&c, &stored, &[0.0, 2.0, 2.0]).unwrap();
    let keys = |m: &Model| m.absorbed_key_bytes() as f64;
    assert_eq!(
        tquant_bench::roofline::token_bytes_with_keys(&c, &stored, &[0.0, 2.0, 2.0], keys(&model))
            .unwrap(),
        exact
    );
    let decode = |model: &mut Model, mode: Mode, attention: AttentionPath| {
        model
            .set_options(Options {
                mode,
                attention,
                ..model.options()
            })
            .unwrap();
        let mut cache = model.new_cache();
        model
            .forward(&[5, 9, 14, 3], &mut cache, Logits::Last)
            .unwrap();
        (0..4u32)
            .flat_map(|t| {
                model
                    .forward(&[t * 31 + 7], &mut cache, Logits::Last)
                    .unwrap()
            })
            .collect::<Vec<f32>>()
    };
    let exact_naive = decode(&mut model, Mode::Exact, AttentionPath::Naive);
    let fast_naive = decode(&mut model, Mode::Fast, AttentionPath::Naive);
    let fast_absorbed = decode(&mut model, Mode::Fast, AttentionPath::Absorbed);
    assert_eq!(model.absorbed_key_bytes(), 3 * 6 * 48 * (32 + 2));
    let fast =
        tquant_bench::roofline::token_bytes_with_keys(&c, &stored, &[0.0, 2.0, 2.0], keys(&model))
            .unwrap();
    assert_eq!(
        exact.attention - fast.attention,
        (3 * 6 * 48 * (32 * 4 - 34)) as f64
    );
    // RMS differences over all logits of the decoded tokens.
    let rms = |a: &[f32], b: &[f32]| {
        (a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64)
            .sqrt()
    };
    let scale = rms(&exact_naive, &vec![0.0; exact_naive.len()]);
    let (int8_acts, with_q8_keys) = (
        rms(&exact_naive, &fast_naive),
        rms(&fast_naive, &fast_absorbed),
    );
    eprintln!(
        "logits RMS {scale}: fast vs exact {int8_acts}, absorbed vs naive (fast) {with_q8_keys}"
    );
    // The query rounded to int8 and the keys to q8_0 cost about what fast mode's other
    // roundings do (measured 1.0x on this model).
    assert!(
        with_q8_keys > 0.0 && with_q8_keys <= 1.25 * int8_acts,
        "{with_q8_keys} vs {int8_acts}"
    );
}
