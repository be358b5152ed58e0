//! `tquant convert`: quantize a safetensors checkpoint into a self-describing quantized one.

use super::calibration::CalibrateArgs;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::path::PathBuf;
use tquant_convert::convert::{Progress, RunOptions};
use tquant_convert::gguf::{convert_gguf, BlockRule, GgufError, GgufOptions, GgufRecipe};
use tquant_convert::{Layout, Overrides, Policy, Recipe};
use tquant_formats::{BlockSize, ScaleDtype, ScaleRule};
use tquant_report::pipeline::layer_by_layer;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .safetensors file, or a directory with model.safetensors or shards and their index.
    pub input: PathBuf,
    /// Output directory (written atomically; refused if it exists unless --force); with
    /// --layout gguf, the .gguf file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Recipe: a format (see `tquant formats`); sf4:nu=X; sf4_fit / sf4_search (nu fitted /
    /// searched per tensor); sf4_opt:nu=X; learned (a table per tensor, k-means); X+search
    /// (per-block scale search); auto / auto:A/B/.. (least-error
    /// format per tensor among nf4, sf4, apot4_sp, e2m1_sp, int4, int4_full, or LIST); gptq:X /
    /// auto+gptq (GPTQ; needs --calibrate or --calibrate-self). Default: sf4_fit (nf4 for bnb,
    /// e2m1 for mxfp4). With --layout gguf a ggml type: q4_0 or iq4_nl (the default), +search
    /// for tquant's scale search, +q8_0 to store embeddings and output in Q8_0.
    #[arg(long)]
    pub format: Option<String>,
    /// Elements per block (16..4096) or `row`. Default: 64 (32 for mxfp4).
    #[arg(long)]
    pub block: Option<BlockSize>,
    /// Scale dtype: f32, f16, bf16, e8m0, e4m3. Default: f16 (f32 for bnb, e8m0 for mxfp4, e4m3 for
    /// compressed-tensors and modelopt).
    #[arg(long)]
    pub scale_dtype: Option<ScaleDtype>,
    /// Student Float nu, overriding the recipe's: a number, `fit` (maximum likelihood per
    /// tensor and expert) or `search` (least error; slower; the default for auto's sf candidates).
    #[arg(long)]
    pub nu: Option<String>,
    /// Block scales, overriding the recipe's: `absmax` (the default) or `search` (per block the
    /// least-squared-error scale; may be negative). tquant layout only.
    #[arg(long)]
    pub scale_rule: Option<ScaleRule>,
    /// On-disk layout: tquant, bnb (bitsandbytes NF4), mxfp4 (OCP MXFP4 as Hugging Face stores it),
    /// compressed-tensors (NVFP4; MXFP4 with --block 32 --scale-dtype e8m0), modelopt (NVFP4),
    /// gguf (one GGUF file for llama.cpp; DeepSeek-V2/V3).
    #[arg(long, default_value = "tquant")]
    pub layout: Layout,
    /// Also quantize tensors matching this glob (`*` and `?`); repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Keep tensors matching this glob unquantized (FP8 ones as BF16); repeatable; beats --include.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Leave tensors matching this glob out of the output (e.g. 'model.layers.61.*'); repeatable;
    /// a glob matching nothing is an error.
    #[arg(long)]
    pub drop: Vec<String>,
    /// Worker threads (0: one per core, the default).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing output tquant wrote (any other directory is refused, never deleted).
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
    /// --layout gguf: the directory holding tokenizer.json (and tokenizer_config.json), when
    /// not the checkpoint's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub calibration: Box<CalibrateArgs>,
}

/// The converter's progress as a bar of bytes.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total_bytes: u64) {
        self.0.set_length(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.layout == Layout::Gguf {
        return run_gguf(args);
    }
    if args.tokenizer.is_some() {
        bail!("--tokenizer is for --layout gguf");
    }
    let overrides = Overrides {
        nu: args.nu.as_deref().map(str::parse).transpose()?,
        block: args.block,
        scale_dtype: args.scale_dtype,
        scale_rule: args.scale_rule,
    };
    let (recipe, b) = Recipe::builder_with(args.format.as_deref(), args.layout, &overrides)?;
    let (include, exclude, drop) = (args.include, args.exclude, args.drop);
    let mut opts = b
        .policy(Policy {
            include,
            exclude,
            drop,
        })
        .build()?;
    let (input, output, threads) = (&args.input, &args.output, args.threads);
    let cal = &args.calibration;
    if recipe.gptq && cal.calibrate.is_none() && cal.calibrate_self.is_none() {
        bail!(
            "recipe '{recipe}' quantizes with GPTQ and needs calibration: pass --calibrate FILE \
             or --calibrate-self N"
        );
    }
    let layerwise = cal.run(input, |c| {
        layer_by_layer(input, output, &opts, c, threads.unwrap_or(0), args.force)
    })?;
    opts.staged_calibration = layerwise.as_ref().map(|l| l.staged());
    opts.validate()?;
    let run = RunOptions {
        force: args.force,
        threads,
    };
    let bar = Bar(super::styled_bar(
        0,
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        "█░",
    ));
    let summary = tquant_convert::convert(input, output, &opts, &run, &bar);
    bar.0.finish_and_clear();
    let summary = summary.with_context(|| format!("converting {}", input.display()))?;
    match &layerwise {
        Some(cal) if !args.json => super::emit(&format!("{summary}{}\n", cal.describe())),
        _ => super::emit_either(args.json, &summary),
    }
}

/// `--layout gguf`: one GGUF file through the GGUF exporter.
fn run_gguf(args: Args) -> Result<()> {
    let unused = [
        ("--block", args.block.is_some()),
        ("--scale-dtype", args.scale_dtype.is_some()),
        ("--nu", args.nu.is_some()),
        ("--calibrate", args.calibration.calibrate.is_some()),
        (
            "--calibrate-self",
            args.calibration.calibrate_self.is_some(),
        ),
        (
            "--scale-rule absmax",
            args.scale_rule == Some(ScaleRule::Absmax),
        ),
    ];
    if let Some((flag, _)) = unused.iter().find(|(_, set)| *set) {
        bail!(
            "{flag} does not apply to --layout gguf: ggml's types fix blocks of 32 with an f16 \
             scale (--format q4_0 or iq4_nl, +search for the scale search)"
        );
    }
    let mut recipe: GgufRecipe = args.format.as_deref().unwrap_or("iq4_nl").parse()?;
    if args.scale_rule == Some(ScaleRule::Search) {
        recipe.rule = BlockRule::Search;
    }
    let opts = GgufOptions {
        recipe,
        policy: Policy {
            include: args.include,
            exclude: args.exclude,
            drop: args.drop,
        },
        tokenizer: args.tokenizer,
        force: args.force,
    };
    let summary = convert_gguf(&args.input, &args.output, &opts).map_err(|e| match e {
        e @ GgufError::NoTokenizer { .. } => anyhow::anyhow!("{e} (--tokenizer DIR)"),
        e @ GgufError::OutputExists { .. } => anyhow::anyhow!("{e} (--force)"),
        e => e.into(),
    });
    let summary = summary.with_context(|| format!("converting {}", args.input.display()))?;
    super::emit_either(args.json, &summary)
}
