//! `tquant convert`: quantize a safetensors checkpoint into a self-describing quantized one.

use super::calibration::CalibrateArgs;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use std::path::PathBuf;
use tquant_convert::convert::{Progress, RunOptions};
use tquant_convert::gguf::{convert_gguf, GgufError, GgufOptions};
use tquant_convert::{KeepAs, Layout, Overrides, Policy, Quality, Recipe};
use tquant_formats::{BlockSize, ScaleDtype, ScaleRule};
use tquant_report::pipeline::layer_by_layer;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .safetensors file, or a directory with model.safetensors or shards and their index.
    pub input: PathBuf,
    /// Output directory, written atomically (with --layout gguf, the .gguf file).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Quality preset (tquant layout): fast (int4_full), balanced (learned+search; the
    /// default), best (gptq:learned+search on 65536 tokens the model writes, or --calibrate
    /// FILE). --format, --keep-as, --calibrate[-self] and the other settings replace the
    /// preset's part.
    #[arg(long)]
    pub quality: Option<Quality>,
    /// Recipe: a format (`tquant formats`), sf4:nu=X, sf4_fit / sf4_search (nu per tensor),
    /// sf4_opt[:nu=X] (Lloyd-Max SF4), learned (a k-means table per tensor), X+search (block
    /// scale search), auto[:A/B/..] (least-error format per tensor), gptq:X / auto+gptq (needs
    /// --calibrate[-self]). Default: the --quality preset's (nf4 for bnb, e2m1 for mxfp4).
    /// --layout gguf: q4_0 or iq4_nl (default), +search, +q8_0 (embeddings, output in Q8_0).
    #[arg(long)]
    pub format: Option<String>,
    /// Elements per block (16..4096) or `row`. Default: 64 (32 for mxfp4).
    #[arg(long)]
    pub block: Option<BlockSize>,
    /// Scale dtype: f32, f16 (default), bf16, e8m0, e4m3 (layout defaults: bnb f32, mxfp4 e8m0).
    #[arg(long)]
    pub scale_dtype: Option<ScaleDtype>,
    /// Student Float nu over the recipe's: a number, `fit` (per tensor) or `search` (least error).
    #[arg(long)]
    pub nu: Option<String>,
    /// Block scales over the recipe's: `absmax` (default), `search` (least squared error), or
    /// for e2m1 `rceil` (e8m0, rounded up: MXFP4 without clipping) or `4over6` (NVFP4, 6 or 4).
    #[arg(long)]
    pub scale_rule: Option<ScaleRule>,
    /// On-disk layout: tquant, bnb (bitsandbytes NF4), mxfp4 (Hugging Face's), compressed-tensors
    /// (NVFP4, MXFP4), modelopt (NVFP4), gguf (one file for llama.cpp; DeepSeek-V2/V3).
    #[arg(long, default_value = "tquant")]
    pub layout: Layout,
    /// Also quantize tensors matching this glob (`*` and `?`); repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Keep tensors matching this glob unquantized (FP8 ones as BF16); repeatable; beats --include.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// How the embeddings and lm_head are stored: q8_0 (the tquant layout's default; 8.5 bits
    /// per weight), head-q8_0 (lm_head as q8_0, the embeddings in the recipe's format) or
    /// source (at source precision, as other layouts keep them; with gguf, q8_0 is the +q8_0
    /// suffix). --include and --exclude still win.
    #[arg(long)]
    pub keep_as: Option<KeepAs>,
    /// Leave tensors matching this glob out (e.g. 'model.layers.61.*'); repeatable; must match.
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
    /// --layout gguf: the directory with tokenizer.json, when not the checkpoint's.
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
    let overrides = Overrides {
        nu: args.nu.as_deref().map(str::parse).transpose()?,
        block: args.block,
        scale_dtype: args.scale_dtype,
        scale_rule: args.scale_rule,
    };
    let policy = Policy {
        include: args.include,
        exclude: args.exclude,
        drop: args.drop,
    };
    let (input, output) = (&args.input, &args.output);
    let (mut format, mut keep_as, mut cal) =
        (args.format.as_deref(), args.keep_as, args.calibration);
    if args.layout == Layout::Tquant {
        let preset = args
            .quality
            .unwrap_or_default()
            .apply(format, keep_as, cal.setting());
        (format, keep_as) = (Some(preset.recipe), Some(preset.keep_as));
        cal.calibrate_self = cal.calibrate_self.or(preset.self_calibration_tokens);
    } else if args.quality.is_some() {
        bail!("--quality is for --layout tquant");
    }
    let cal = &cal;
    if args.layout == Layout::Gguf {
        let opts = GgufOptions {
            policy,
            tokenizer: args.tokenizer,
            force: args.force,
            ..GgufOptions::with_settings(format, &overrides, cal.setting(), keep_as)?
        };
        let summary = convert_gguf(input, output, &opts).map_err(|e| match e {
            e @ GgufError::NoTokenizer { .. } => anyhow::anyhow!("{e} (--tokenizer DIR)"),
            e @ GgufError::OutputExists { .. } => anyhow::anyhow!("{e} (--force)"),
            e => e.into(),
        });
        let summary = summary.with_context(|| format!("converting {}", input.display()))?;
        return super::emit_either(args.json, &summary);
    }
    if args.tokenizer.is_some() {
        bail!("--tokenizer is for --layout gguf");
    }
    let (recipe, b) = Recipe::builder_with(format, args.layout, &overrides)?;
    let b = match keep_as {
        Some(keep) => b.keep_as(keep),
        None => b,
    };
    let mut opts = b.policy(policy).build()?;
    recipe.check_calibrated(cal.setting().is_some())?;
    let threads = args.threads;
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
