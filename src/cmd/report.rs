//! `tquant report`: weight error, bits per byte and MAC area of every format asked for.

use super::calibration::CalibrateArgs;
use anyhow::Result;
use indicatif::ProgressBar;
use std::path::PathBuf;
use tquant_formats::{BlockSize, ScaleDtype};
use tquant_report::{ReportRequest, Setting};

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
    let request = ReportRequest {
        model: args.model,
        text: args.text.filter(|_| !args.weights_only),
        window: args.window,
        max_bytes: args.max_bytes,
        formats: args.formats,
        setting: Setting {
            block: args.block,
            scale_dtype: args.scale_dtype,
        },
        output: args.output,
        force: args.force,
        calibration: args.calibration.request(),
    };
    let mut bar: Option<ProgressBar> = None;
    let report = request.run(|steps, what| {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        let bar = bar.get_or_insert_with(|| super::progress_bar(steps));
        bar.set_message(what.to_string());
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report.write(&request.output)?;
    super::emit(&report.markdown())
}
