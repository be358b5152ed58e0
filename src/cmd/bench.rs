//! `tquant bench gemv|gemm`: the kernel benchmark of `tquant_bench::kernel`, printed.

use anyhow::{bail, Result};
use tquant_bench::kernel::{self, Spec, Weights};
use tquant_formats::{BlockQuantizer, BlockSize, ScaleDtype};

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
    /// Weight format (any name `tquant formats` lists, or q8_0).
    #[arg(long, default_value = "nf4")]
    format: Weights,
    /// Block length (16..4096 or `row`); 32 with f16 scales is 4.5 bits per weight.
    #[arg(long, default_value = "32")]
    block: BlockSize,
    /// Scale dtype: f32, f16, bf16, e8m0.
    #[arg(long, default_value = "f16")]
    scale_dtype: ScaleDtype,
    /// Threads for every measurement (0: one per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs per measurement (default: 15 for gemv, 5 for gemm).
    #[arg(long)]
    reps: Option<usize>,
    /// Size of the buffer whose summation gives the read bandwidth, MiB.
    #[arg(long, default_value_t = 1024)]
    read_mib: usize,
    /// Print JSON: {results: [{isa, mode, seconds, weight_gbps, gflops}], f32, read_gbps}.
    #[arg(long)]
    json: bool,
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
    let spec = Spec {
        rows: args.rows,
        cols: args.cols,
        n,
        format: args.format,
        quantizer: BlockQuantizer {
            block: args.block,
            scale_dtype: args.scale_dtype,
        },
        reps: args.reps.unwrap_or(if n == 1 { 15 } else { 5 }).max(1),
        threads: args.threads,
        read_mib: args.read_mib,
    };
    let results = kernel::run(&spec)?;
    super::emit(&if args.json {
        format!("{}\n", serde_json::to_string_pretty(&results.to_json())?)
    } else {
        results.table(&spec)
    })
}
