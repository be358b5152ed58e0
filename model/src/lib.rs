//! tquant-model: a DeepSeek-V2 / V3 (MLA + DeepSeekMoE) forward pass on the CPU over float or
//! block-quantized weights, with generation and bits-per-byte evaluation.
//!
//! Tensors come only through a [`TensorSource`] (a checkpoint read by tquant-convert, or tensors
//! quantized in memory); every weight product goes through tquant-kernels.
//!
//! ```
//! use tquant_model::{Logits, Model, Options};
//! // The bundled example model (a byte vocabulary: ids are bytes).
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny-lite");
//! let model = Model::open(dir.as_ref(), Options::default())?;
//! let mut cache = model.new_cache();
//! let logits = model.forward(&[104, 105], &mut cache, Logits::Last)?;
//! assert_eq!(logits.len(), model.config().vocab_size);
//! assert!(logits.iter().all(|v| v.is_finite()));
//! # Ok::<(), tquant_model::ModelError>(())
//! ```
#![warn(missing_docs)]

mod attention;
pub mod calibrate;
pub mod calibration_run;
mod checkpoint;
mod config;
pub mod eval;
pub mod generate;
pub mod generation;
mod layerwise;
pub mod linear;
mod model;
mod moe;
mod observe;
mod rope;
pub mod synthetic;
pub mod weights;

pub use attention::AttentionPath;
pub use calibration_run::{CalibrationPlan, LayerByLayer};
pub use checkpoint::{checkpoint_source, CheckpointSource};
pub use config::{Config, Family, RopeConfig, RopeScaling, TopkMethod, Yarn};
pub use tquant_kernels::{Mode, RowTables};

pub use generation::Generation;
pub use layerwise::{LayerwiseRun, Stage};
pub use linear::{Bf16Data, Linear, Packed, Q8Data, Q8Linear};
pub use model::{KvCache, Logits, Model, Options};
pub(crate) use tquant_kernels as kernels;
pub use weights::{MemorySource, QuantTensor, QuantizeOnLoad, TensorData, TensorSource};

use std::path::Path;

/// Errors of the model crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A `config.json` the model cannot use.
    #[error("config {origin}: {msg}")]
    Config {
        /// The file.
        origin: String,
        /// What is wrong.
        msg: String,
    },
    /// A tensor missing or of the wrong shape or dtype.
    #[error("tensor `{name}`: {msg}")]
    Tensor {
        /// The checkpoint's tensor name.
        name: String,
        /// What is wrong.
        msg: String,
    },
    /// A quantized matrix (rows `row0..row0 + rows` of a tensor) whose stored codes or scales
    /// are shorter than its shape needs.
    #[error(
        "checkpoint: rows {row0}..{} of {cols} columns need {code_bytes} code and \
         {scale_bytes} scale bytes, the tensor has {codes} and {scales}", row0 + rows
    )]
    PartsTooShort {
        /// The first row.
        row0: usize,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Code bytes the rows need.
        code_bytes: usize,
        /// Scale bytes the rows need.
        scale_bytes: usize,
        /// Code bytes stored.
        codes: usize,
        /// Scale bytes stored.
        scales: usize,
    },
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Convert(#[from] tquant_convert::ConvertError),
    /// A product was refused by the kernels.
    #[error("kernel: {0}")]
    Kernel(#[from] tquant_kernels::KernelError),
    /// A KV cache made for a model of other layers or widths.
    #[error("the KV cache was made for another model")]
    CacheMismatch,
    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary (size {vocab})")]
    TokenOutOfVocabulary {
        /// The id.
        token: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Worker threads that could not be started.
    #[error("cannot start {threads} threads: {source}")]
    Threads {
        /// The count asked for.
        threads: usize,
        /// Why.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// No quantized matrices given to stack into one tensor.
    #[error("no matrices to stack")]
    NothingToStack,
    /// Quantized matrices to stack whose shape, block or scale dtype differ.
    #[error("stacked matrices differ in shape, block or scale dtype")]
    StackMismatch,
    /// A top-p outside (0, 1].
    #[error("top-p must be in (0, 1], got {top_p}")]
    TopP {
        /// The value given.
        top_p: f32,
    },
    /// A temperature that is NaN or infinite.
    #[error("the temperature must be a finite number, got {temperature}")]
    Temperature {
        /// The value given.
        temperature: f32,
    },
    /// A generation from no prompt tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// An evaluation window of no tokens.
    #[error("the window must be at least 1 token")]
    EmptyWindow,
    /// A calibration window of no tokens.
    #[error("the calibration window must be at least 1 token")]
    EmptyCalibrationWindow,
    /// Calibration over no tokens.
    #[error("no calibration tokens")]
    NoCalibrationTokens,
    /// An evaluation window longer than the model has positions for.
    #[error(
        "a window of {window} tokens needs {} positions; the model's \
         max_position_embeddings is {limit}, so the window can be at most {}",
        window + 1, limit.saturating_sub(1)
    )]
    WindowTooLong {
        /// Tokens per window.
        window: usize,
        /// The model's `max_position_embeddings`.
        limit: usize,
    },
    /// Bits per byte asked of a model whose vocabulary is not bytes.
    #[error(
        "bits per byte needs a byte vocabulary (256 tokens); this model has {vocab}: give token \
         ids instead"
    )]
    NotByteVocabulary {
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A token file that is not whole little-endian u32 values.
    #[error("a token file holds little-endian u32 ids; {bytes} bytes is not a multiple of 4")]
    TokenFileLength {
        /// The file's length.
        bytes: usize,
    },
    /// Self-calibration asked for no tokens, or in sequences of none.
    #[error(
        "self-calibration needs at least one token in sequences of at least one \
         (asked for {total} in sequences of {window})"
    )]
    SelfCalibrationSize {
        /// Tokens asked for.
        total: usize,
        /// Tokens per sequence.
        window: usize,
    },
    /// A calibration stage asked for after the last one.
    #[error("all {stages} calibration stages have run already")]
    StagesDone {
        /// The stages there are.
        stages: usize,
    },
    /// A feed-forward stage run for a layer of the other kind (`dense` or `MoE`).
    #[error("layer {layer} is not a {kind} layer")]
    LayerKind {
        /// The layer.
        layer: usize,
        /// The kind the stage needs.
        kind: &'static str,
    },
    /// A layer's feed-forward stage run before its attention stage.
    #[error("layer {layer}: its feed-forward stages run after its attention stage")]
    StageBeforeAttention {
        /// The layer.
        layer: usize,
    },
    /// Collected statistics the converter refuses.
    #[error("layer {layer} {site:?}: {source}")]
    Statistics {
        /// The layer.
        layer: usize,
        /// Where in the layer.
        site: observe::Site,
        /// Why.
        #[source]
        source: Box<tquant_convert::ConvertError>,
    },
    /// Too few tokens for one evaluation chunk of `window + 1` tokens.
    #[error("{tokens} tokens make no chunk of window + 1 = {chunk}")]
    TooFewTokens {
        /// Tokens given.
        tokens: usize,
        /// Tokens a chunk takes.
        chunk: usize,
    },
    /// A generation that would run past the model's `max_position_embeddings`.
    #[error(
        "the prompt ({prompt} tokens) plus {max_tokens} new tokens make {positions} positions, \
         more than the model's max_position_embeddings ({limit})"
    )]
    ContextTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens to generate at most.
        max_tokens: usize,
        /// `prompt + max_tokens`.
        positions: usize,
        /// The model's `max_position_embeddings`.
        limit: usize,
    },
    /// Calibration asked of a checkpoint that is already quantized.
    #[error("calibration runs the float model: {} is already quantized", path.display())]
    AlreadyQuantized {
        /// The checkpoint.
        path: std::path::PathBuf,
    },
    /// A run that would not fit in the memory available, refused before it starts.
    #[error("{msg}")]
    Memory {
        /// Which check refused it.
        check: calibration_run::MemoryCheck,
        /// What it needs and what is available.
        msg: String,
    },
}

/// Maps `0..n` with `f`, on the thread pool when `work` (multiply-adds) is worth waking threads
/// for by the kernels' own rule, else on the calling thread (small decode steps).
pub(crate) fn map_range<T: Send>(
    n: usize,
    work: usize,
    f: impl Fn(usize) -> Result<T, ModelError> + Sync + Send,
) -> Result<Vec<T>, ModelError> {
    use rayon::prelude::*;
    if work >= kernels::PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

impl ModelError {
    pub(crate) fn tensor(name: &str, msg: impl Into<String>) -> Self {
        Self::Tensor {
            name: name.to_string(),
            msg: msg.into(),
        }
    }
}

impl Model {
    /// Opens a checkpoint (a directory with `config.json`, or a `.safetensors` file beside one):
    /// original or tquant-quantized, one file or shards. Quantized matrices run from the map.
    pub fn open(path: &Path, opts: Options) -> Result<Self, ModelError> {
        let src = checkpoint_source(path)?;
        let config = config_of(&src, path)?;
        let mut m = Self::from_source(config, &src, opts)?;
        m.set_notes(src.notes());
        Ok(m)
    }

    /// Opens a checkpoint and quantizes its float matrices in memory as they load: `quantize`
    /// gets each 2-D or 3-D float tensor (name, shape, values) and returns its quantized form,
    /// or `None` to keep it as floats.
    pub fn open_quantized<F>(path: &Path, opts: Options, quantize: F) -> Result<Self, ModelError>
    where
        F: Fn(&str, &[usize], &[f32]) -> Result<Option<QuantTensor>, ModelError> + Sync,
    {
        let src = checkpoint_source(path)?;
        let config = config_of(&src, path)?;
        let mut m = Self::from_source(
            config,
            &QuantizeOnLoad {
                inner: &src,
                quantize,
            },
            opts,
        )?;
        m.set_notes(src.notes());
        Ok(m)
    }
}

/// The checkpoint's `config.json`.
fn config_of(src: &CheckpointSource, path: &Path) -> Result<Config, ModelError> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let origin = dir.join("config.json").display().to_string();
    match src.checkpoint().config() {
        Some(v) => Config::from_value(v, &origin),
        None => Err(ModelError::Config {
            origin,
            msg: "missing: a model needs its config.json beside the weights".into(),
        }),
    }
}
