//! `tquant verify`: dequantize every quantized tensor and compare it with the original.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tquant_convert::inspect::verify;
use tquant_convert::Checkpoint;

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
    let open =
        |p: &PathBuf| Checkpoint::open(p).with_context(|| format!("opening {}", p.display()));
    let (original, quantized) = (open(&args.original)?, open(&args.quantized)?);
    let (a, b) = (args.original.display(), args.quantized.display());
    match (original.is_quantized(), quantized.is_quantized()) {
        (true, true) => bail!(
            "{a} is quantized: verify compares the original (unquantized) checkpoint, given \
             first, with a quantized one made from it"
        ),
        (true, false) => bail!(
            "the arguments look swapped: {a} is quantized and {b} is not; the original comes \
             first: tquant verify {b} {a}"
        ),
        (false, false) => bail!(
            "{b} holds no quantized tensor: verify compares an original checkpoint with one \
             `tquant convert` made from it"
        ),
        (false, true) => {}
    }
    let report = verify(&original, &quantized)?;
    super::emit_either(args.json, &report)?;
    if !report.kept_different.is_empty() {
        bail!(
            "kept tensors differ from the original: {}",
            report.kept_different.join(", ")
        );
    }
    Ok(())
}
