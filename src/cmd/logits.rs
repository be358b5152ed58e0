//! `tquant logits`: a model's logits for a list of token ids, as JSON.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use tquant_model::{Logits, Mode, Model, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (original or quantized checkpoint with its config.json).
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub tokens: Vec<u32>,
    /// Only the last position's logits.
    #[arg(long)]
    pub last: bool,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Use the kernels' fast mode (8-bit activations) for quantized layers.
    #[arg(long)]
    pub fast: bool,
}

pub fn run(args: Args) -> Result<()> {
    let opts = Options {
        threads: args.threads,
        mode: if args.fast { Mode::Fast } else { Mode::Exact },
        ..Options::default()
    };
    let model = Model::open(&args.model, opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    for note in model.notes() {
        eprintln!("note: {note}");
    }
    let mut cache = model.new_cache();
    let which = if args.last { Logits::Last } else { Logits::All };
    let logits = model.forward(&args.tokens, &mut cache, which)?;
    let rows: Vec<&[f32]> = logits.chunks(model.config().vocab_size).collect();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &serde_json::json!({ "logits": rows }))?;
    writeln!(out)?;
    Ok(())
}
