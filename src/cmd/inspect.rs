//! `tquant inspect`: every tensor of a checkpoint with its format, block, scales, bits, nu.

use super::convert::emit;
use anyhow::{Context, Result};
use std::fmt::Write as _;
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
    let mut out = String::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return emit(&out);
    }
    let fmt_nu = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) => format!("{:.3}", n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::Array(a) => {
            let xs: Vec<f64> = a.iter().filter_map(|x| x.as_f64()).collect();
            if xs.is_empty() {
                "-".into()
            } else {
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{lo:.2}..{hi:.2}")
            }
        }
        _ => "-".into(),
    };
    writeln!(
        out,
        "{:<60} {:<18} {:<6} {:<16} {:>6} {:>5} {:>7} {:>12}",
        "name", "shape", "dtype", "format", "block", "scale", "bits/w", "nu"
    )?;
    for t in &report.tensors {
        writeln!(
            out,
            "{:<60} {:<18} {:<6} {:<16} {:>6} {:>5} {:>7.3} {:>12}",
            t.name,
            format!("{:?}", t.shape),
            t.dtype,
            t.format,
            t.block.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            t.scale_dtype.as_deref().unwrap_or("-"),
            t.bits_per_weight,
            fmt_nu(&t.nu)
        )?;
    }
    writeln!(
        out,
        "{} tensors ({} quantized, {} kept), {:.3} M parameters, {:.2} MB, {:.3} bits per weight",
        report.tensors.len(),
        report.quantized,
        report.kept,
        report.params as f64 / 1e6,
        report.total_bytes as f64 / 1e6,
        report.bits_per_weight
    )?;
    emit(&out)
}
