//! What `eval`, `logits` and `run` take: the model directory, threads and kernel mode.

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
    /// Fast kernels: 8-bit activations for quantized layers, bf16 (AVX512-BF16) for bf16 weights.
    #[arg(long)]
    pub fast: bool,
}

impl ModelArgs {
    /// Loads the model; what is worth knowing about how it loaded goes to stderr.
    pub fn open(&self) -> Result<Model> {
        let opts = Options {
            threads: self.threads,
            mode: if self.fast { Mode::Fast } else { Mode::Exact },
            ..Options::default()
        };
        let model = Model::open(&self.model, opts)
            .with_context(|| format!("loading {}", self.model.display()))?;
        for note in model.notes() {
            eprintln!("note: {note}");
        }
        Ok(model)
    }
}
