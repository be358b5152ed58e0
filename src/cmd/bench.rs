//! `tquant bench gemv|gemm`: the kernel benchmark of `tquant_bench::kernel` (quantized, bf16
//! and f32 products of the same weights), printed.

use super::convert::emit;
use anyhow::{bail, Result};
use std::fmt::Write as _;
use tquant_bench::kernel::{self, Measure, Spec};
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
use tquant_kernels::{Isa, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// One activation row (decoding).
    Gemv,
    /// A batch of activation rows (prefill).
    Gemm,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// gemv (one activation row) or gemm (a batch).
    #[arg(value_enum)]
    kind: Kind,
    /// Output features (weight rows).
    #[arg(long, default_value_t = 4096)]
    rows: usize,
    /// Input features (weight columns).
    #[arg(long, default_value_t = 4096)]
    cols: usize,
    /// Activation rows (gemm; default 64).
    #[arg(long)]
    batch: Option<usize>,
    /// Weight format (any name `tquant formats` lists).
    #[arg(long, default_value = "nf4")]
    format: String,
    /// Block length (16..4096 or `row`); 32 with f16 scales is 4.5 bits per weight.
    #[arg(long, default_value = "32")]
    block: String,
    /// Scale dtype: f32, f16, bf16, e8m0.
    #[arg(long, default_value = "f16")]
    scale_dtype: String,
    /// Threads for every measurement (0: one per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs per measurement (default: 15 for gemv, 5 for gemm).
    #[arg(long)]
    reps: Option<usize>,
    /// Size of the buffer whose summation gives the read bandwidth, MiB.
    #[arg(long, default_value_t = 1024)]
    read_mib: usize,
    /// Print one JSON object: {results: [{isa, mode, seconds, weight_gbps, gflops}], f32, read_gbps}.
    #[arg(long)]
    json: bool,
}

fn json(r: &Measure) -> serde_json::Value {
    serde_json::json!({
        "seconds": r.seconds,
        "weight_gbps": r.weight_gbps,
        "gflops": r.gflops,
    })
}

pub fn run(args: Args) -> Result<()> {
    let n = match (args.kind, args.batch) {
        (Kind::Gemv, None | Some(1)) => 1,
        (Kind::Gemv, Some(b)) => {
            bail!("gemv multiplies one activation row; use gemm for --batch {b}")
        }
        (Kind::Gemm, b) => b.unwrap_or(64),
    };
    if args.rows == 0 || args.cols == 0 || n == 0 {
        bail!("--rows, --cols and --batch must be at least 1");
    }
    let format: Format = args.format.parse()?;
    let block: BlockSize = args.block.parse()?;
    let scale_dtype: ScaleDtype = args.scale_dtype.parse()?;
    let reps = args.reps.unwrap_or(if n == 1 { 15 } else { 5 }).max(1);
    let (rows, cols) = (args.rows, args.cols);
    let spec = Spec {
        rows,
        cols,
        n,
        format,
        quantizer: BlockQuantizer { block, scale_dtype },
        reps,
        threads: args.threads,
        read_mib: args.read_mib,
    };
    let res = kernel::run(&spec)?;
    let (results, f32, read_gbps) = (&res.kernels, res.f32, res.read_gbps);
    if args.json {
        let list = |rows: &[(Isa, Mode, Measure)]| -> Vec<serde_json::Value> {
            rows.iter()
                .map(|(isa, mode, r)| {
                    let mut v = json(r);
                    v["isa"] = isa.name().into();
                    v["mode"] = mode.name().into();
                    v
                })
                .collect()
        };
        let out = serde_json::json!({
            "results": list(results), "bf16": list(&res.bf16), "f32": json(&f32),
            "read_gbps": read_gbps
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&out)?));
    }
    let mut out = String::new();
    writeln!(
        out,
        "{} [{rows} x {cols}] x {n} activation rows, {} block {} {scale_dtype} ({:.3} bits/weight), {} thread(s), median of {reps}",
        if n == 1 { "gemv" } else { "gemm" },
        spec.format,
        res.block,
        res.bits_per_weight,
        res.threads
    )?;
    writeln!(
        out,
        "read bandwidth ({} MiB sum): {read_gbps:.1} GB/s",
        args.read_mib
    )?;
    writeln!(
        out,
        "{:<8} {:<9} {:>10} {:>9} {:>9} {:>8} {:>9}",
        "isa", "mode", "time", "GB/s", "GFLOP/s", "vs f32", "% read"
    )?;
    let line = |out: &mut String, isa: &str, mode: &str, r: &Measure| {
        let pct = 100.0 * r.weight_gbps / read_gbps;
        writeln!(
            out,
            "{isa:<8} {mode:<9} {:>8.3}ms {:>9.2} {:>9.1} {:>7.2}x {:>8.1}%",
            r.seconds * 1e3,
            r.weight_gbps,
            r.gflops,
            f32.seconds / r.seconds,
            pct
        )
    };
    for (isa, mode, r) in results {
        line(&mut out, isa.name(), mode.name(), r)?;
    }
    for (isa, mode, r) in &res.bf16 {
        let name = match mode {
            Mode::Exact => "bf16",
            Mode::Fast => "bf16-fast",
        };
        line(&mut out, isa.name(), name, r)?;
    }
    line(&mut out, Isa::detect().name(), "f32", &f32)?;
    let note = kernel::machine_cache_note(&res, 4 * rows * cols);
    out.push_str(&note);
    emit(&out)
}
