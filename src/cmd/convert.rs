//! `tquant convert`: quantize a safetensors checkpoint into a self-describing quantized one.

use super::calibration::CalibrateArgs;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::OnceLock;
use tquant_convert::convert::ProgressFns;
use tquant_convert::{KeepAs, Layout, Overrides, Policy, Quality};
use tquant_formats::{BlockSize, ScaleDtype, ScaleRule};
use tquant_report::ConvertRequest;

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

pub fn run(args: Args) -> Result<()> {
    let request = ConvertRequest {
        quality: args.quality,
        format: args.format,
        overrides: Overrides {
            nu: args.nu.as_deref().map(str::parse).transpose()?,
            block: args.block,
            scale_dtype: args.scale_dtype,
            scale_rule: args.scale_rule,
        },
        layout: args.layout,
        policy: Policy {
            include: args.include,
            exclude: args.exclude,
            drop: args.drop,
        },
        keep_as: args.keep_as,
        threads: args.threads,
        force: args.force,
        tokenizer: args.tokenizer,
        calibration: args.calibration.request(),
    };
    // A bar of bytes, from the converter's start (after any calibration).
    let bar = OnceLock::new();
    let template =
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})";
    let progress = ProgressFns {
        start: |total| {
            bar.get_or_init(|| super::styled_bar(total, template, "█░"));
        },
        advance: |bytes| {
            if let Some(bar) = bar.get() {
                bar.inc(bytes);
            }
        },
    };
    let converted = request.run(&args.input, &args.output, &progress);
    if let Some(bar) = bar.get() {
        bar.finish_and_clear();
    }
    super::emit_either(args.json, &converted?)
}
