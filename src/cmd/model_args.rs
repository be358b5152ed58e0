//! What `eval`, `logits` and `run` take: the model directory, threads and kernel mode.
//!
//! `run` defaults to fast kernels (measured within the noise of format choice, docs/fast-mode.md;
//! the model keeps exact kernels for the tensors whose fast form is not); `eval` and `logits`
//! default to exact kernels, so the accuracy figures they produce stay comparable.

use anyhow::{Context, Result};
use std::path::PathBuf;
use tquant_model::{Mode, Model, Options};

#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model directory (original or quantized checkpoint with its config.json).
    pub model: PathBuf,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Fast kernels: 8-bit activations for quantized layers, bf16 (AVX512-BF16) for bf16 weights
    /// (the default of `run`).
    #[arg(long, conflicts_with = "exact")]
    pub fast: bool,
    /// Exact kernels: f32 activations everywhere (the default of `eval` and `logits`).
    #[arg(long)]
    pub exact: bool,
}

impl ModelArgs {
    /// Loads the model with kernel mode `default` (`run`: fast; `eval`, `logits`: exact) unless
    /// a flag names one; what is worth knowing about how it loaded goes to stderr.
    pub fn open_with(&self, default: Mode) -> Result<Model> {
        let opts = Options::with_switches(self.threads, self.fast, self.exact, default);
        let model = Model::open(&self.model, opts)
            .with_context(|| format!("loading {}", self.model.display()))?;
        for note in model.notes() {
            eprintln!("note: {note}");
        }
        Ok(model)
    }
}
