//! Decode against the memory roofline: a DeepSeek-V2-Lite-shaped model of generated weights
//! (decoder matrices quantized as they are made; the head and embeddings as the converter's
//! default policy stores them, q8_0, or at bf16 as V2-Lite stores them: [`HeadFormat`]; routers
//! bf16), its prefill and decode speed, the machine's read bandwidth in the same rounds, and the
//! bytes of weights one decoded token reads. The roofline is bandwidth / bytes per token: no
//! decoder can beat it while its weights come from DRAM.
//!
//! Bytes per token follow what the forward pass reads for one token: every attention matrix
//! (the absorbed MLA path reads the value half of `kv_b_proj` packed and the key half as its
//! transposed copy `W_UK^T`: f32 in exact mode, q8_0 in fast mode), the dense MLP, the router,
//! the shared experts, the routed experts the router chose (counted through [`Tap`]), the norms,
//! the head and one embedding row. The KV cache read is reported apart (it grows with the
//! position).

use crate::kernel::{median, parallel_sum};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tquant_convert::{Action, Dtype, Policy};
use tquant_formats::q8_0::Q8Matrix;
use tquant_formats::{BlockQuantizer, BlockSize, Format, FormatError, ScaleDtype};
use tquant_model::calibrate::{Site, Tap};
use tquant_model::synthetic::SyntheticSource;
use tquant_model::{
    Bf16Data, Config, KvCache, Logits, Mode, Model, ModelError, Options, Packed, Q8Data,
    QuantTensor, TensorData, TensorSource,
};

/// Errors of the roofline benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RooflineError {
    /// The model refused its weights or a forward pass failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The format cannot quantize with these blocks and scales.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A tensor the byte count needs was never loaded.
    #[error("tensor {name}: no stored size recorded (the model never loaded it)")]
    Unloaded {
        /// The tensor.
        name: String,
    },
    /// Expert counts given for another number of layers than the model has.
    #[error("{experts} expert counts for {layers} layers")]
    ExpertCounts {
        /// Counts given.
        experts: usize,
        /// The model's layers.
        layers: usize,
    },
    /// A [`Spec`] with nothing to measure: no thread counts, or no tokens or rounds.
    #[error("thread counts, prefill, decode and rounds must be given and not 0")]
    NothingToMeasure,
}

/// DeepSeek-V2-Lite's shape (hidden 2048, MLA with kv_lora 512, no query LoRA; a dense first
/// layer of width 10944, then MoE layers of 64 routed experts of width 1408, 6 active, 2
/// shared), with `layers` decoder layers and a vocabulary of `vocab`.
pub fn v2_lite_config(layers: usize, vocab: usize) -> Result<Config, ModelError> {
    Config::from_json(
        &v2_lite_config_json(layers, vocab),
        "DeepSeek-V2-Lite shape",
    )
}

/// [`v2_lite_config`] as a Hugging Face `config.json`, with the fields transformers' and
/// llama.cpp's DeepSeek-V2 loaders read besides the model's own.
pub fn v2_lite_config_json(layers: usize, vocab: usize) -> String {
    format!(
        r#"{{"architectures":["DeepseekV2ForCausalLM"],"model_type":"deepseek_v2",
"vocab_size":{vocab},"hidden_size":2048,"intermediate_size":10944,
"moe_intermediate_size":1408,"num_hidden_layers":{layers},"num_attention_heads":16,
"num_key_value_heads":16,"q_lora_rank":null,"kv_lora_rank":512,"qk_nope_head_dim":128,
"qk_rope_head_dim":64,"v_head_dim":128,"n_routed_experts":64,"n_shared_experts":2,
"num_experts_per_tok":6,"first_k_dense_replace":1,"moe_layer_freq":1,"topk_method":"greedy",
"n_group":1,"topk_group":1,"routed_scaling_factor":1.0,"norm_topk_prob":false,
"scoring_func":"softmax","aux_loss_alpha":0.001,"seq_aux":true,"rms_norm_eps":1e-6,
"max_position_embeddings":163840,"rope_theta":10000,"rope_scaling":{{"type":"yarn",
"factor":40,"original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,
"mscale":0.707,"mscale_all_dim":0.707}},"bos_token_id":100000,"eos_token_id":100001,
"tie_word_embeddings":false,"torch_dtype":"bfloat16"}}"#
    )
}

/// Random weights with `config`'s names and shapes (those of [`SyntheticSource`]), handed out
/// as the model keeps them: matrices the converter's default [`Policy`] quantizes are made
/// directly in `format`, band of rows by band of rows (never a whole f32 copy of a large
/// matrix); the other matrices as bf16; 1-D tensors (norms) as f32 ones. Records the stored
/// size of every tensor it hands out.
pub struct GeneratedSource {
    shapes: HashMap<String, Vec<usize>>,
    seed: u64,
    policy: Policy,
    format: Format,
    quantizer: BlockQuantizer,
    head: HeadFormat,
    stored_bytes: Mutex<HashMap<String, usize>>,
}

/// How the output head and the token embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadFormat {
    /// bf16, as V2-Lite stores them (`tquant convert --keep-as source`).
    Bf16,
    /// q8_0 (ggml's Q8_0: int8 codes, an f16 scale per 32), 8.5 bits per weight, as the
    /// converter's default policy stores them.
    #[default]
    Q8_0,
}

impl HeadFormat {
    /// `q8_0` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for HeadFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "q8_0" => Ok(Self::Q8_0),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown head format '{s}' (q8_0, bf16)")),
        }
    }
}

/// The output head and the token embedding table.
fn is_head_or_embedding(name: &str) -> bool {
    name == "lm_head.weight" || name == "model.embed_tokens.weight"
}

/// Rows generated and quantized together.
const BAND: usize = 64;

impl GeneratedSource {
    /// Weights of `config`'s shape drawn from `seed`, decoder matrices in `format` with
    /// `quantizer`'s blocks and scales.
    pub fn new(
        config: &Config,
        seed: u64,
        format: Format,
        quantizer: BlockQuantizer,
    ) -> Result<Self, FormatError> {
        quantizer.check(format.codebook())?;
        Ok(Self {
            shapes: SyntheticSource::new(config, seed, false).shapes().clone(),
            seed,
            policy: Policy::default(),
            format,
            quantizer,
            head: HeadFormat::default(),
            stored_bytes: Mutex::new(HashMap::new()),
        })
    }

    /// The same source with the head and embeddings stored as `head`.
    pub fn with_head(mut self, head: HeadFormat) -> Self {
        self.head = head;
        self
    }

    /// Bytes each tensor handed out so far takes as stored.
    pub fn stored_bytes(&self) -> HashMap<String, usize> {
        self.stored_bytes.lock().expect("not poisoned").clone()
    }

    fn shape(&self, name: &str) -> Result<&[usize], ModelError> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| tensor_error(name, "not in the generated checkpoint"))
    }

    /// Rows `r0..r0 + rows` of matrix `name` (`cols` wide): uniform with variance `1 / cols`.
    fn band(&self, name: &str, r0: usize, rows: usize, cols: usize) -> Vec<f32> {
        let a = (3.0 / cols as f64).sqrt() as f32;
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
            ^ (r0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..rows * cols)
            .map(|_| {
                let u = (splitmix(&mut state) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
                a * (2.0 * u - 1.0)
            })
            .collect()
    }

    /// The tensor as stored, and its size in bytes.
    fn make(&self, name: &str) -> Result<(TensorData, usize), ModelError> {
        let shape = self.shape(name)?.to_vec();
        if shape.len() == 1 {
            let bytes = 4 * shape[0];
            let t = TensorData::Dense {
                values: vec![1.0; shape[0]],
                shape,
            };
            return Ok((t, bytes));
        }
        let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let matrices: usize = shape[..shape.len() - 2].iter().product();
        // (first row, rows) over all matrices stacked; a band never straddles two matrices.
        let bands: Vec<(usize, usize)> = (0..matrices)
            .flat_map(|m| {
                (0..rows)
                    .step_by(BAND)
                    .map(move |r| (m * rows + r, BAND.min(rows - r)))
            })
            .collect();
        if self.head == HeadFormat::Q8_0 && is_head_or_embedding(name) {
            let parts = bands
                .par_iter()
                .map(|&(r0, n)| Q8Matrix::quantize(&self.band(name, r0, n, cols), n, cols))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tensor_error(name, e.to_string()))?;
            let mut codes = Vec::with_capacity(rows * cols * matrices);
            let mut scales = Vec::new();
            for m in parts {
                codes.extend_from_slice(&m.codes);
                scales.extend_from_slice(&m.scales);
            }
            let bytes = codes.len() + 2 * scales.len();
            let data = Q8Data::Owned {
                codes: codes.into(),
                scales: scales.into(),
            };
            return Ok((TensorData::Q8 { shape, data }, bytes));
        }
        if self.policy.decide(name, &shape, Dtype::BF16) != Action::Quantize {
            let parts: Vec<Vec<u16>> = bands
                .par_iter()
                .map(|&(r0, n)| {
                    self.band(name, r0, n, cols)
                        .into_iter()
                        .map(tquant_kernels::bf16::f32_to_bf16)
                        .collect()
                })
                .collect();
            let bits = parts.concat();
            let bytes = 2 * bits.len();
            let data = Bf16Data::Owned(bits.into());
            return Ok((TensorData::Bf16 { shape, data }, bytes));
        }
        let cb = self.format.codebook();
        let parts = bands
            .par_iter()
            .map(|&(r0, n)| {
                self.quantizer
                    .quantize(cb, &self.band(name, r0, n, cols), n, cols)
                    .map(|m| (r0, n, m))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tensor_error(name, e.to_string()))?;
        let mut codes = Vec::new();
        let mut scales = Vec::new();
        let mut next = 0;
        for (r0, n, m) in parts {
            if r0 != next {
                return Err(tensor_error(name, "bands do not tile the matrix"));
            }
            next = r0 + n;
            codes.extend_from_slice(&m.codes);
            scales.extend_from_slice(&m.scales);
        }
        let bytes = codes.len() + scales.len();
        let t = TensorData::Quantized(QuantTensor {
            shape,
            block: BlockSize::len_for(self.quantizer.block, cols),
            scale_dtype: self.quantizer.scale_dtype,
            packed: Packed::owned(codes, scales),
            tables: vec![Arc::from(cb.values()); matrices],
            row_tables: None,
        });
        Ok((t, bytes))
    }
}

impl std::fmt::Debug for GeneratedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GeneratedSource")
    }
}

fn tensor_error(name: &str, msg: impl Into<String>) -> ModelError {
    ModelError::Tensor {
        name: name.to_string(),
        msg: msg.into(),
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl TensorSource for GeneratedSource {
    fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// Widened to f32 (small models and tests only: the stored form is what the model loads).
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        Ok(match self.make(name)?.0 {
            TensorData::Bf16 { shape, data } => TensorData::Dense {
                shape,
                values: data.to_f32(),
            },
            t => t,
        })
    }

    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        let (t, bytes) = self.make(name)?;
        self.stored_bytes
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), bytes);
        Ok(t)
    }
}

/// Bytes of weights one decoded token reads, by part.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenBytes {
    /// Query, KV down- and up-projections (the absorbed path's reads) and output projection.
    pub attention: f64,
    /// The dense MLP of the first layers.
    pub dense_mlp: f64,
    /// The MoE routers.
    pub router: f64,
    /// The shared experts of the MoE layers.
    pub shared_experts: f64,
    /// The routed experts chosen, over all MoE layers.
    pub routed_experts: f64,
    /// Every RMSNorm weight vector.
    pub norms: f64,
    /// The output head.
    pub head: f64,
    /// One row of the embedding table.
    pub embedding_row: f64,
}

impl TokenBytes {
    /// Every part together.
    pub fn total(&self) -> f64 {
        self.attention
            + self.dense_mlp
            + self.router
            + self.shared_experts
            + self.routed_experts
            + self.norms
            + self.head
            + self.embedding_row
    }
}

/// What one decoded token reads, from the stored size of every tensor (`stored`, by name) and
/// the number of routed experts chosen per token in each decoder layer (`experts[i]`, 0 for a
/// dense layer; an average over tokens), with the absorbed path's `W_UK^T` as f32 (exact
/// mode's copy).
pub fn token_bytes(
    c: &Config,
    stored: &HashMap<String, usize>,
    experts: &[f64],
) -> Result<TokenBytes, RooflineError> {
    let f32_keys = 4 * c.num_hidden_layers * c.num_attention_heads * c.kv_lora_rank;
    token_bytes_with_keys(c, stored, experts, (f32_keys * c.qk_nope_head_dim) as f64)
}

/// [`token_bytes`] with `keys` bytes of `W_UK^T` over all layers, as
/// [`Model::absorbed_key_bytes`] gives them for the model's mode (fast mode reads a narrower
/// copy).
pub fn token_bytes_with_keys(
    c: &Config,
    stored: &HashMap<String, usize>,
    experts: &[f64],
    keys: f64,
) -> Result<TokenBytes, RooflineError> {
    let get = |name: &str| -> Result<f64, RooflineError> {
        stored
            .get(name)
            .map(|&b| b as f64)
            .ok_or_else(|| RooflineError::Unloaded {
                name: name.to_string(),
            })
    };
    if experts.len() != c.num_hidden_layers {
        return Err(RooflineError::ExpertCounts {
            experts: experts.len(),
            layers: c.num_hidden_layers,
        });
    }
    let mlp = |p: &str| -> Result<f64, RooflineError> {
        Ok(get(&format!("{p}.gate_proj.weight"))?
            + get(&format!("{p}.up_proj.weight"))?
            + get(&format!("{p}.down_proj.weight"))?)
    };
    let (nope, v) = (c.qk_nope_head_dim, c.v_head_dim);
    let mut b = TokenBytes {
        head: get("lm_head.weight")?,
        embedding_row: get("model.embed_tokens.weight")? / c.vocab_size as f64,
        norms: get("model.norm.weight")?,
        ..TokenBytes::default()
    };
    for (i, &chosen) in experts.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = format!("{p}.self_attn");
        b.norms += get(&format!("{p}.input_layernorm.weight"))?
            + get(&format!("{p}.post_attention_layernorm.weight"))?
            + get(&format!("{a}.kv_a_layernorm.weight"))?;
        b.attention += match c.q_lora_rank {
            None => get(&format!("{a}.q_proj.weight"))?,
            Some(_) => {
                b.norms += get(&format!("{a}.q_a_layernorm.weight"))?;
                get(&format!("{a}.q_a_proj.weight"))? + get(&format!("{a}.q_b_proj.weight"))?
            }
        };
        // Absorbed decode: the value rows of kv_b_proj as stored, its key rows as the copy
        // W_UK^T ([heads][kv_lora, nope]), an equal share of `keys` per layer.
        b.attention += get(&format!("{a}.kv_a_proj_with_mqa.weight"))?
            + get(&format!("{a}.kv_b_proj.weight"))? * v as f64 / (nope + v) as f64
            + keys / c.num_hidden_layers as f64
            + get(&format!("{a}.o_proj.weight"))?;
        let m = format!("{p}.mlp");
        if !c.is_moe_layer(i) {
            b.dense_mlp += mlp(&m)?;
            continue;
        }
        b.router += get(&format!("{m}.gate.weight"))?;
        if c.n_shared_experts > 0 {
            b.shared_experts += mlp(&format!("{m}.shared_experts"))?;
        }
        // All experts of a layer have one shape and format: expert 0 stands for any.
        b.routed_experts += chosen * mlp(&format!("{m}.experts.0"))?;
    }
    Ok(b)
}

/// Counts, per decoder layer, the routed experts that received tokens.
#[derive(Debug)]
pub struct ExpertCounter {
    counts: Mutex<Vec<usize>>,
}

impl ExpertCounter {
    /// A counter for a model of `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        Self {
            counts: Mutex::new(vec![0; layers]),
        }
    }

    /// Routed experts run so far, per layer.
    pub fn counts(&self) -> Vec<usize> {
        self.counts.lock().expect("not poisoned").clone()
    }
}

impl Tap for ExpertCounter {
    fn record(&self, layer: usize, site: Site, _x: &[f32], _n: usize, _w: Option<&[f32]>) {
        if let Site::ExpertInput(_) = site {
            self.counts.lock().expect("not poisoned")[layer] += 1;
        }
    }
}

/// The index of the largest logit (greedy decoding).
fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0 as u32
}

/// Decodes `steps` tokens greedily after `first` on top of `cache`, one token per forward.
/// With `tap`, returns the routed experts chosen per token in each layer (an average).
fn decode(
    model: &Model,
    cache: &mut KvCache,
    first: u32,
    steps: usize,
    tap: Option<&ExpertCounter>,
) -> Result<Vec<f64>, ModelError> {
    let mut token = first;
    for _ in 0..steps {
        let logits = match tap {
            Some(t) => model.install(|| model.forward_observed(&[token], cache, Logits::Last, t)),
            None => model.forward(&[token], cache, Logits::Last),
        }?;
        token = argmax(&logits);
    }
    Ok(tap
        .map(|t| t.counts())
        .unwrap_or_default()
        .into_iter()
        .map(|c| c as f64 / steps.max(1) as f64)
        .collect())
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Decoder layers (the first dense, the rest MoE).
    pub layers: usize,
    /// Vocabulary size (embeddings and head).
    pub vocab: usize,
    /// The 4-bit format of the decoder matrices.
    pub format: Format,
    /// Elements per block.
    pub block: usize,
    /// Thread counts to measure.
    pub threads: Vec<usize>,
    /// Prompt tokens of the prefill.
    pub prefill: usize,
    /// Tokens decoded after the prompt.
    pub decode: usize,
    /// Timed rounds per thread count (each: read bandwidth, prefill, decode); medians.
    pub rounds: usize,
    /// Buffer summed for the read bandwidth, MiB (larger than the last-level cache).
    pub read_mib: usize,
    /// Seed of the generated weights.
    pub seed: u64,
    /// Arithmetic of the quantized products (`Mode::Fast`: int8 activations).
    pub mode: Mode,
    /// How the head and the token embeddings are stored.
    pub head: HeadFormat,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            layers: 6,
            vocab: 102_400,
            format: "nf4".parse().expect("nf4 is in the catalog"),
            block: 32,
            threads: vec![1, 2],
            prefill: 512,
            decode: 64,
            rounds: 3,
            read_mib: 256,
            seed: 7,
            mode: Mode::Exact,
            head: HeadFormat::default(),
        }
    }
}

/// One thread count's medians.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Worker threads.
    pub threads: usize,
    /// Read bandwidth measured in this round, GB/s.
    pub read_gbps: f64,
    /// Prefill tokens per second.
    pub prefill_tps: f64,
    /// Decode tokens per second.
    pub decode_tps: f64,
    /// read bandwidth / bytes per token.
    pub roofline_tps: f64,
}

impl Row {
    /// Decode speed as a percentage of the roofline.
    pub fn percent_of_roofline(&self) -> f64 {
        100.0 * self.decode_tps / self.roofline_tps
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// What ran.
    pub spec: Spec,
    /// Stored size of all weights.
    pub weight_bytes: usize,
    /// Seconds to generate and load the weights.
    pub load_seconds: f64,
    /// Bytes of weights one decoded token reads.
    pub token: TokenBytes,
    /// Routed experts chosen per token, per MoE layer (average over the decoded tokens).
    pub experts_per_token: Vec<f64>,
    /// KV cache bytes one decoded token reads at the last position (not in the roofline).
    pub kv_cache_bytes: usize,
    /// One row per thread count.
    pub rows: Vec<Row>,
}

/// Builds the model, counts the bytes of a decoded token, and measures every thread count.
pub fn run(spec: &Spec) -> Result<Report, RooflineError> {
    if spec.threads.is_empty() || spec.prefill == 0 || spec.decode == 0 || spec.rounds == 0 {
        return Err(RooflineError::NothingToMeasure);
    }
    let config = v2_lite_config(spec.layers, spec.vocab)?;
    let quantizer = BlockQuantizer {
        block: BlockSize::new(spec.block)?,
        scale_dtype: ScaleDtype::F16,
    };
    let src = GeneratedSource::new(&config, spec.seed, spec.format.clone(), quantizer)?
        .with_head(spec.head);
    let t0 = Instant::now();
    let options = Options {
        mode: spec.mode,
        ..Options::default()
    };
    let mut model = Model::from_source(config.clone(), &src, options)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let stored = src.stored_bytes();
    drop(src);
    let prompt: Vec<u32> = (0..spec.prefill)
        .map(|i| ((i * 7919 + 13) % config.vocab_size) as u32)
        .collect();

    // The router's real choices on the tokens the timed runs decode.
    let mut cache = model.new_cache();
    let first = argmax(&model.forward(&prompt, &mut cache, Logits::Last)?);
    let counter = ExpertCounter::new(config.num_hidden_layers);
    let experts = decode(&model, &mut cache, first, spec.decode, Some(&counter))?;
    let keys = model.absorbed_key_bytes() as f64;
    let token = token_bytes_with_keys(&config, &stored, &experts, keys)?;
    let kv_cache_bytes = 4 * config.kv_cache_width() * cache.len() * config.num_hidden_layers;
    drop(cache);

    let read_buf: Vec<u64> = (0..(spec.read_mib << 20) / 8).map(|i| i as u64).collect();
    let mut rows = Vec::new();
    for &threads in &spec.threads {
        model.set_options(Options {
            threads,
            ..model.options()
        })?;
        let (mut read, mut pre, mut dec) = (Vec::new(), Vec::new(), Vec::new());
        // Round 0 warms up; then each round measures all three, so a busy machine slows them
        // alike.
        for round in 0..=spec.rounds {
            let r = model.install(|| {
                let t = Instant::now();
                std::hint::black_box(parallel_sum(&read_buf));
                t.elapsed().as_secs_f64()
            });
            let t = Instant::now();
            let mut cache = model.new_cache();
            let first = argmax(&model.forward(&prompt, &mut cache, Logits::Last)?);
            let p = t.elapsed().as_secs_f64();
            let t = Instant::now();
            decode(&model, &mut cache, first, spec.decode, None)?;
            let d = t.elapsed().as_secs_f64();
            if round > 0 {
                read.push(r);
                pre.push(p);
                dec.push(d);
            }
        }
        let read_gbps = (read_buf.len() * 8) as f64 / median(read) / 1e9;
        rows.push(Row {
            threads: model.threads(),
            read_gbps,
            prefill_tps: spec.prefill as f64 / median(pre),
            decode_tps: spec.decode as f64 / median(dec),
            roofline_tps: read_gbps * 1e9 / token.total(),
        });
    }
    Ok(Report {
        spec: spec.clone(),
        weight_bytes: stored.values().sum(),
        load_seconds,
        token,
        experts_per_token: experts
            .iter()
            .enumerate()
            .filter(|&(i, _)| config.is_moe_layer(i))
            .map(|(_, &e)| e)
            .collect(),
        kv_cache_bytes,
        rows,
    })
}

fn mb(b: f64) -> String {
    format!("{:.1} MB", b / 1e6)
}

impl Report {
    fn format_label(&self) -> String {
        format!(
            "{} block {} f16 scales",
            self.spec.format.name(),
            self.spec.block
        )
    }

    /// The human-readable table.
    pub fn text(&self) -> String {
        let s = &self.spec;
        let t = &self.token;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "model: DeepSeek-V2-Lite shape, {} layers, vocabulary {}; decoder matrices {}, \
             embeddings and head {}, routers bf16; {} of weights, generated and loaded in {:.1} s",
            s.layers,
            s.vocab,
            self.format_label(),
            s.head.name(),
            mb(self.weight_bytes as f64),
            self.load_seconds
        );
        let experts: Vec<String> = self
            .experts_per_token
            .iter()
            .map(|e| format!("{e:.2}"))
            .collect();
        let _ = writeln!(
            o,
            "weights read per decoded token: {} (attention {}, dense MLP {}, router {}, shared \
             experts {}, routed experts {} [{} chosen per token per MoE layer], norms {}, head {}, \
             embedding row {})",
            mb(t.total()),
            mb(t.attention),
            mb(t.dense_mlp),
            mb(t.router),
            mb(t.shared_experts),
            mb(t.routed_experts),
            experts.join(", "),
            mb(t.norms),
            mb(t.head),
            mb(t.embedding_row)
        );
        let _ = writeln!(
            o,
            "KV cache read per token at position {}: {} (not in the roofline)",
            s.prefill + s.decode,
            mb(self.kv_cache_bytes as f64)
        );
        let _ = writeln!(
            o,
            "prefill {} tokens, decode {} tokens greedily; medians of {} rounds\n",
            s.prefill, s.decode, s.rounds
        );
        let _ = writeln!(
            o,
            "{:>7}  {:>10}  {:>13}  {:>12}  {:>14}  {:>13}",
            "threads",
            "read GB/s",
            "prefill tok/s",
            "decode tok/s",
            "roofline tok/s",
            "% of roofline"
        );
        for r in &self.rows {
            let _ = writeln!(
                o,
                "{:>7}  {:>10.2}  {:>13.2}  {:>12.3}  {:>14.3}  {:>12.1}%",
                r.threads,
                r.read_gbps,
                r.prefill_tps,
                r.decode_tps,
                r.roofline_tps,
                r.percent_of_roofline()
            );
        }
        o
    }

    /// The same as JSON.
    pub fn json(&self) -> String {
        let s = &self.spec;
        let t = &self.token;
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"threads\":{},\"read_gbps\":{:.4},\"prefill_tokens_per_s\":{:.4},\
                     \"decode_tokens_per_s\":{:.4},\"roofline_tokens_per_s\":{:.4},\
                     \"percent_of_roofline\":{:.2}}}",
                    r.threads,
                    r.read_gbps,
                    r.prefill_tps,
                    r.decode_tps,
                    r.roofline_tps,
                    r.percent_of_roofline()
                )
            })
            .collect();
        let experts: Vec<String> = self
            .experts_per_token
            .iter()
            .map(|e| format!("{e:.4}"))
            .collect();
        format!(
            "{{\"model\":\"DeepSeek-V2-Lite shape\",\"layers\":{},\"vocab\":{},\"format\":\"{}\",\
             \"block\":{},\"scale_dtype\":\"f16\",\"head_format\":\"{}\",\"weight_bytes\":{},\"load_seconds\":{:.2},\
             \"prefill_tokens\":{},\"decode_tokens\":{},\"rounds\":{},\
             \"bytes_per_token\":{{\"total\":{:.0},\"attention\":{:.0},\"dense_mlp\":{:.0},\
             \"router\":{:.0},\"shared_experts\":{:.0},\"routed_experts\":{:.0},\"norms\":{:.0},\
             \"head\":{:.0},\"embedding_row\":{:.0}}},\"routed_experts_per_token\":[{}],\
             \"kv_cache_bytes_last_token\":{},\"runs\":[{}]}}",
            s.layers,
            s.vocab,
            s.format.name(),
            s.block,
            s.head.name(),
            self.weight_bytes,
            self.load_seconds,
            s.prefill,
            s.decode,
            s.rounds,
            t.total(),
            t.attention,
            t.dense_mlp,
            t.router,
            t.shared_experts,
            t.routed_experts,
            t.norms,
            t.head,
            t.embedding_row,
            experts.join(","),
            self.kv_cache_bytes,
            rows.join(",")
        )
    }
}
