//! criterion benches of the DeepSeek-V2 runner: prefill and decode tokens per second.
//!
//! - `model/<model>/prefill`: one forward pass over a prompt from an empty cache (GEMM path,
//!   naive MLA). Throughput: prompt tokens.
//! - `model/<model>/decode`: one token on top of a cache of the prompt (GEMV path, absorbed MLA).
//!   Throughput: 1 token.
//!
//! Models: `tiny-lite` (examples/tiny-lite, 1.87M parameters; prompt 256 tokens) and `gen2048`,
//! random weights made here: hidden 2048, V2-Lite attention (16 heads, kv_lora 512, rope 64),
//! 2 layers (a dense layer of width 10944, then a MoE layer of 64 routed experts of width 1408,
//! 6 active, 2 shared), vocabulary 8192; prompt 64 tokens. Ids are `<format>/<threads>t`, where
//! the format is `f32` (float weights widened to f32, through the f32 kernel), `bf16` (float
//! weights as bf16 through the bf16 kernels, exact mode; `bf16-fast`: fast mode) or a 4-bit
//! format (RTN, block 64, f16 scales, every decoder matrix but the router).
//! `TQUANT_BENCH_MODELS=tiny-lite` (or `gen2048`) runs one model only, `TQUANT_BENCH_FORMATS=f32,bf16`
//! some formats only.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::Path;
use std::time::Duration;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
use tquant_model::linear::Bf16Data;
use tquant_model::synthetic::SyntheticSource;
use tquant_model::weights::{rtn_decoder_matrices, QuantizeOnLoad, TensorSource};
use tquant_model::{Config, Logits, Mode, Model, ModelError, Options, TensorData};

const FORMATS: [&str; 5] = ["f32", "bf16", "bf16-fast", "nf4", "sf4"];

/// Every tensor widened to f32 (`stored` falls back to `tensor`).
struct Widened<'a>(&'a dyn TensorSource);

impl TensorSource for Widened<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.0.tensor(name)
    }
}

/// Every float matrix held as bf16 (rounded to nearest even where the source has f32).
struct AsBf16<'a>(&'a dyn TensorSource);

impl TensorSource for AsBf16<'_> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.0.tensor(name)
    }
    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        Ok(match self.0.stored(name)? {
            TensorData::Dense { shape, values } if shape.len() >= 2 => TensorData::Bf16 {
                shape,
                data: Bf16Data::Owned(
                    values
                        .iter()
                        .map(|&v| tquant_kernels::bf16::f32_to_bf16(v))
                        .collect(),
                ),
            },
            t => t,
        })
    }
}
const THREADS: [usize; 2] = [1, 2];

fn gen2048_config() -> Config {
    let text = r#"{"model_type":"deepseek_v2","vocab_size":8192,"hidden_size":2048,
        "intermediate_size":10944,"moe_intermediate_size":1408,"num_hidden_layers":2,
        "num_attention_heads":16,"q_lora_rank":null,"kv_lora_rank":512,"qk_nope_head_dim":128,
        "qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":64,"n_shared_experts":2,
        "num_experts_per_tok":6,"first_k_dense_replace":1,"moe_layer_freq":1,
        "topk_method":"greedy","n_group":1,"topk_group":1,"routed_scaling_factor":1.0,
        "max_position_embeddings":163840,"rope_theta":10000,"rope_scaling":{"type":"yarn",
        "factor":40,"original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,
        "mscale":0.707,"mscale_all_dim":0.707}}"#;
    Config::from_json(text, "gen2048").unwrap()
}

fn build(config: &Config, src: &dyn TensorSource, format: &str) -> Model {
    let opts = Options::default();
    match format {
        "f32" => return Model::from_source(config.clone(), &Widened(src), opts).unwrap(),
        "bf16" => return Model::from_source(config.clone(), &AsBf16(src), opts).unwrap(),
        "bf16-fast" => {
            let opts = Options {
                mode: Mode::Fast,
                ..opts
            };
            return Model::from_source(config.clone(), &AsBf16(src), opts).unwrap();
        }
        _ => {}
    }
    let quantizer = BlockQuantizer {
        block: BlockSize::Elements(64),
        scale_dtype: ScaleDtype::F16,
    };
    let f: Format = format.parse().unwrap();
    let q = QuantizeOnLoad {
        inner: src,
        quantize: rtn_decoder_matrices(f, quantizer),
    };
    Model::from_source(config.clone(), &q, opts).unwrap()
}

fn bench_model(
    c: &mut Criterion,
    name: &str,
    config: &Config,
    src: &dyn TensorSource,
    prompt_len: usize,
) {
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|i| ((i * 7919 + 13) % config.vocab_size) as u32)
        .collect();
    for format in FORMATS.into_iter().filter(|f| wanted_format(f)) {
        let mut model = build(config, src, format);
        for threads in THREADS {
            model
                .set_options(Options {
                    threads,
                    ..model.options()
                })
                .unwrap();
            let id = format!("{format}/{threads}t");
            let mut g = c.benchmark_group(format!("model/{name}/prefill"));
            g.throughput(Throughput::Elements(prompt_len as u64));
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| {
                    let mut cache = model.new_cache();
                    model.forward(&prompt, &mut cache, Logits::Last).unwrap()
                })
            });
            g.finish();
            let mut cache = model.new_cache();
            model.forward(&prompt, &mut cache, Logits::Last).unwrap();
            let mut g = c.benchmark_group(format!("model/{name}/decode"));
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter(|| {
                    let l = model.forward(&[1], &mut cache, Logits::Last).unwrap();
                    cache.truncate(prompt_len);
                    l
                })
            });
            g.finish();
        }
    }
}

fn wanted(name: &str) -> bool {
    std::env::var("TQUANT_BENCH_MODELS")
        .map(|v| v.split(',').any(|m| m.trim() == name))
        .unwrap_or(true)
}

fn wanted_format(name: &str) -> bool {
    std::env::var("TQUANT_BENCH_FORMATS")
        .map(|v| v.split(',').any(|m| m.trim() == name))
        .unwrap_or(true)
}

fn benches(c: &mut Criterion) {
    if wanted("tiny-lite") {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-lite");
        let config = Config::from_path(&dir).unwrap();
        let src = tquant_model::checkpoint_source(&dir).unwrap();
        bench_model(c, "tiny-lite", &config, &src, 256);
    }
    if wanted("gen2048") {
        let config = gen2048_config();
        let src = SyntheticSource::new(&config, 7, false);
        bench_model(c, "gen2048", &config, &src, 64);
    }
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(group);
