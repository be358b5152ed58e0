//! `tquant inspect`: every tensor of a checkpoint with its format, block, scales, bits, nu.

use anyhow::{Context, Result};
use std::path::PathBuf;
use tquant_convert::inspect::inspect;
use tquant_convert::Checkpoint;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint: a .safetensors file or a directory (original or quantized).
    pub checkpoint: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let ckpt = Checkpoint::open(&args.checkpoint)
        .with_context(|| format!("opening {}", args.checkpoint.display()))?;
    let report = inspect(&ckpt)?;
    super::emit_either(args.json, &report)
}
