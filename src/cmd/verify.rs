//! `tquant verify`: dequantize every quantized tensor and compare it with the original.

use super::convert::emit;
use anyhow::{Context, Result};
use std::fmt::Write as _;
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
    let original = Checkpoint::open(&args.original)
        .with_context(|| format!("opening {}", args.original.display()))?;
    let quantized = Checkpoint::open(&args.quantized)
        .with_context(|| format!("opening {}", args.quantized.display()))?;
    if original.is_quantized() {
        let (a, b) = (args.original.display(), args.quantized.display());
        if quantized.is_quantized() {
            anyhow::bail!(
                "{a} is quantized: verify compares the original (unquantized) checkpoint, given \
                 first, with a quantized one made from it"
            );
        }
        anyhow::bail!(
            "the arguments look swapped: {a} is quantized and {b} is not; the original comes \
             first: tquant verify {b} {a}"
        );
    }
    if !quantized.is_quantized() {
        anyhow::bail!(
            "{} holds no quantized tensor: verify compares an original checkpoint with one \
             `tquant convert` made from it",
            args.quantized.display()
        );
    }
    let report = verify(&original, &quantized)?;
    let mut out = String::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(
            out,
            "{:<60} {:<16} {:>10} {:>8} {:>11} {:>9}",
            "name", "format", "nmse", "sqnr dB", "max |err|", "cosine"
        )?;
        for t in &report.tensors {
            writeln!(
                out,
                "{:<60} {:<16} {:>10.6} {:>8.2} {:>11.4e} {:>9.6}",
                t.name, t.format, t.nmse, t.sqnr_db, t.max_abs_err, t.cosine
            )?;
        }
        writeln!(out,
            "{} quantized tensors, overall nmse {:.6}; {} kept tensors identical, {} different, {} absent",
            report.tensors.len(),
            report.nmse,
            report.kept_identical,
            report.kept_different.len(),
            report.missing.len()
        )?;
    }
    emit(&out)?;
    if !report.kept_different.is_empty() {
        anyhow::bail!(
            "kept tensors differ from the original: {}",
            report.kept_different.join(", ")
        );
    }
    Ok(())
}
