//! `tquant report`: weight error, bits per byte and MAC area of every format asked for.

use super::calibration::CalibrateArgs;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use tquant_formats::{BlockSize, ScaleDtype};
use tquant_report::measure::{parse_variants, with_calibrated_twins};
use tquant_report::{CalibrationOptions, EvalText, Report, Setting};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory with the original (unquantized) weights.
    pub model: PathBuf,
    /// Text for bits per byte, through the model's tokenizer (not needed with --weights-only).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Tokens scored per chunk: each chunk of window + 1 tokens scores its last `window`.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Use the first N bytes of the text, cut before tokenizing (a partial last chunk is dropped).
    #[arg(long, default_value_t = 65792)]
    pub max_bytes: usize,
    /// `all` (catalog, sf4_fit, sf4_search, auto, auto+search) or a comma-separated list of:
    /// catalog names, sf4:nu=X, sf4_opt:nu=X, sf4_fit / sf3_fit, sf4_search / sf3_search,
    /// learned, auto / auto:A/B/.., custom:v0,v1,... (last); X+search searches each block's scale (as `tquant convert`).
    #[arg(long, default_value = "all")]
    pub formats: String,
    /// Block length (16..4096) or `row`.
    #[arg(long, default_value = "64")]
    pub block: BlockSize,
    /// Scale dtype: f32, f16, bf16 or e8m0.
    #[arg(long, default_value = "f16")]
    pub scale_dtype: ScaleDtype,
    /// Only quantize and report weight errors (any safetensors model; no runner, no text).
    #[arg(long)]
    pub weights_only: bool,
    /// Output directory (created if missing; one holding other files is refused).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Replace the report files of an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// With --calibrate, every format also gets a calibrated (GPTQ) row: gptq:<format>, auto+gptq.
    #[command(flatten)]
    pub calibration: Box<CalibrateArgs>,
}

pub fn run(args: Args) -> Result<()> {
    if args.text.is_none() && !args.weights_only {
        anyhow::bail!(
            "report needs --text FILE to measure bits per byte, or --weights-only to report \
             only the weight errors (any safetensors model)"
        );
    }
    tquant_report::report::check_output(&args.output, args.force)?;
    tquant_model::checkpoint_source(&args.model)?;
    let (block, scale_dtype) = (args.block, args.scale_dtype);
    let setting = Setting { block, scale_dtype };
    let mut variants = parse_variants(&args.formats, block, scale_dtype).context("--formats")?;
    let collect = |c: &CalibrationOptions| c.collect(&args.model, 0).map(Arc::new);
    let calibration = args.calibration.run(&args.model, collect)?;
    if let Some(cal) = &calibration {
        variants = with_calibrated_twins(variants, cal);
    }
    let eval = match (&args.text, args.weights_only) {
        (Some(path), false) => Some(
            EvalText::read(&args.model, path, args.window, args.max_bytes).context(
                "text needs tokenizer.json beside the model (or a 256-token byte vocabulary); \
                 or give token ids to `tquant eval`",
            )?,
        ),
        _ => None,
    };
    let bar = super::progress_bar(variants.len() as u64 + u64::from(eval.is_some()));
    let mut started = false;
    let report = Report::measure(
        &args.model,
        &variants,
        &setting,
        eval.as_ref(),
        calibration.as_deref(),
        |step| {
            if std::mem::replace(&mut started, true) {
                bar.inc(1);
            }
            bar.set_message(step.to_string());
        },
    )?;
    bar.finish_and_clear();
    report.write(&args.output)?;
    super::emit(&report.markdown())
}
