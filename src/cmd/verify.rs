//! `tquant verify`: dequantize every quantized tensor and compare it with the original.

use anyhow::{bail, Result};
use std::path::PathBuf;
use tquant_report::verify_checkpoints;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The original checkpoint.
    pub original: PathBuf,
    /// The quantized checkpoint made from it.
    pub quantized: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let report = verify_checkpoints(&args.original, &args.quantized)?;
    super::emit_either(args.json, &report)?;
    if !report.kept_different.is_empty() {
        bail!(
            "kept tensors differ from the original: {}",
            report.kept_different.join(", ")
        );
    }
    Ok(())
}
