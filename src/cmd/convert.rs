//! `tquant convert`: quantize a safetensors checkpoint into a self-describing quantized one.

use super::calibration::CalibrateArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use tquant_convert::convert::{Progress, RunOptions};
use tquant_convert::{Layout, Overrides, Policy, Recipe};
use tquant_formats::{BlockSize, ScaleDtype, ScaleRule};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .safetensors file, or a directory with model.safetensors or shards and their index.
    pub input: PathBuf,
    /// Output directory (written atomically; refused if it exists unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Recipe: a format (nf4, int4, e2m1, ...; see `tquant formats`), where sf4 is Student
    /// Float at nu = 5, sf4:nu=3.5 another nu, sf4_fit nu fitted per tensor and sf4_search the
    /// nu with the least error; `+search` searches each block's scale (nf4+search); `auto`
    /// chooses per tensor (per expert) the format with the least weight error among nf4, sf4
    /// (nu searched), apot4_sp, e2m1_sp, int4 and int4_full, `auto:LIST` among LIST (comma- or
    /// /-separated), at the same bits per weight; `gptq:nf4` (`auto+gptq`) quantizes with GPTQ
    /// and needs --calibrate or --calibrate-self. Default: sf4_fit (nf4 for --layout bnb, e2m1
    /// for --layout mxfp4).
    #[arg(long)]
    pub format: Option<String>,
    /// Elements per block (16..4096) or `row`. Default: 64 (32 for mxfp4).
    #[arg(long)]
    pub block: Option<BlockSize>,
    /// Scale dtype: f32, f16, bf16, e8m0. Default: f16 (f32 for bnb, e8m0 for mxfp4).
    #[arg(long)]
    pub scale_dtype: Option<ScaleDtype>,
    /// Student Float degrees of freedom, overriding the recipe's: a number; `fit` (per tensor
    /// and per expert, the maximum-likelihood fit of block-standardised values); or `search`
    /// (per tensor and per expert, the nu with the least quantization error; slower). For the
    /// plain sf candidates of --format auto, fit or search (default search).
    #[arg(long)]
    pub nu: Option<String>,
    /// Block scales, overriding the recipe's: `absmax` (the block's largest magnitude onto the
    /// table's, the paper's rule; the default) or `search` (per block, the scale with the least
    /// squared error, stored in the same dtype; may be negative). tquant layout only.
    #[arg(long)]
    pub scale_rule: Option<ScaleRule>,
    /// On-disk layout: tquant, bnb (bitsandbytes NF4 as transformers saves it), mxfp4
    /// (OCP MXFP4 as Hugging Face stores it).
    #[arg(long, default_value = "tquant")]
    pub layout: Layout,
    /// Also quantize tensors matching this glob (`*` and `?`); repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Keep tensors matching this glob unquantized; repeatable; wins over --include. An FP8
    /// weight kept this way is written dequantized as BF16 (its block scales are not written).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Leave tensors matching this glob out of the output entirely; repeatable; a glob that
    /// matches no tensor is an error. E.g. DeepSeek-V3's multi-token-prediction layer, which
    /// inference does not run: --drop 'model.layers.61.*'.
    #[arg(long)]
    pub drop: Vec<String>,
    /// Worker threads (0: one per core, the default).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing output that tquant wrote (a directory holding anything else is
    /// refused, never deleted).
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub calibration: Box<CalibrateArgs>,
}

/// The converter's progress as a bar of bytes.
struct Bar<'a>(&'a ProgressBar);

impl Progress for Bar<'_> {
    fn start(&self, total_bytes: u64) {
        self.0.set_length(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub fn run(args: Args) -> Result<()> {
    let overrides = Overrides {
        nu: args.nu.as_deref().map(str::parse).transpose()?,
        block: args.block,
        scale_dtype: args.scale_dtype,
        scale_rule: args.scale_rule,
    };
    let (recipe, b) = Recipe::builder_with(args.format.as_deref(), args.layout, &overrides)?;
    let b = b.policy(Policy {
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        drop: args.drop.clone(),
    });
    let mut opts = b.build()?;
    let c = &args.calibration;
    if recipe.gptq && c.calibrate.is_none() && c.calibrate_self.is_none() {
        bail!(
            "recipe '{recipe}' quantizes with GPTQ and needs calibration: pass --calibrate FILE \
             or --calibrate-self N"
        );
    }
    let layerwise = args.calibration.layerwise(
        &args.input,
        &args.output,
        &opts,
        args.threads.unwrap_or(0),
        args.force,
    )?;
    opts.staged_calibration = layerwise.as_ref().map(|l| l.staged());
    opts.validate()?;
    let run = RunOptions {
        force: args.force,
        threads: args.threads,
    };
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .expect("valid template"),
        )
    } else {
        ProgressBar::hidden()
    };
    let summary = tquant_convert::convert(&args.input, &args.output, &opts, &run, &Bar(&bar));
    bar.finish_and_clear();
    let summary = summary.with_context(|| format!("converting {}", args.input.display()))?;
    if args.json {
        return super::emit(&format!("{}\n", serde_json::to_string_pretty(&summary)?));
    }
    match &layerwise {
        Some(cal) => super::emit(&format!("{summary}{}\n", cal.describe())),
        None => super::emit(&summary.to_string()),
    }
}
