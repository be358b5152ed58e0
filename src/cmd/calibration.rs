//! `--calibrate` and its settings (GPTQ; docs/calibration.md), shared by convert and report.

use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};
use tquant_convert::calibration::{CalibrationSettings, DEFAULT_MIN_TOKENS_PER_COLUMN};
use tquant_convert::Setting;
use tquant_formats::gptq::DEFAULT_DAMP;
use tquant_model::calibrate::RouterWeighting;
use tquant_model::calibration_run::MemoryCheck;
use tquant_model::ModelError;
use tquant_report::pipeline::{CalibrationOptions, CalibrationSource};
use tquant_report::ReportError;
use tquant_text::TextError;

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// GPTQ with the float model's inputs on FILE (text, or token ids with --calibrate-ids).
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,
    /// GPTQ on N tokens the float model writes itself (temperature 1, --calibrate-window long).
    #[arg(long, value_name = "N", conflicts_with = "calibrate")]
    pub calibrate_self: Option<usize>,
    /// Seed of the text --calibrate-self generates.
    #[arg(long, default_value_t = 0, requires = "calibrate_self")]
    pub calibrate_seed: u64,
    /// FILE holds little-endian u32 token ids (any vocabulary); offsets and lengths count ids.
    #[arg(long, requires = "calibrate")]
    pub calibrate_ids: bool,
    /// Skip the first N bytes of FILE (e.g. the part an evaluation scores).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "calibrate_self"
    )]
    pub calibrate_offset: usize,
    /// Use at most N bytes of FILE after the offset (default: the rest).
    #[arg(long, value_name = "N", conflicts_with = "calibrate_self")]
    pub calibrate_bytes: Option<usize>,
    /// Tokens per calibration chunk, each from an empty cache (and per --calibrate-self sequence).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub calibrate_window: usize,
    /// GPTQ damping, relative to the mean diagonal of each input second moment.
    #[arg(long, default_value_t = DEFAULT_DAMP)]
    pub damp: f64,
    /// GPTQ act-order: quantize the columns with the largest inputs first.
    #[arg(long)]
    pub act_order: bool,
    /// How routed experts count tokens: `routed` (by routing weight squared) or `uniform`.
    #[arg(long, default_value = "routed")]
    pub router_weighting: RouterWeighting,
    /// Calibrate a matrix only if this many tokens per input column reached it (else plain).
    #[arg(long, default_value_t = DEFAULT_MIN_TOKENS_PER_COLUMN, value_name = "X")]
    pub min_tokens_per_column: f64,
}

impl CalibrateArgs {
    /// The setting that asks for calibration, if any.
    pub fn setting(&self) -> Option<Setting> {
        match (&self.calibrate, self.calibrate_self) {
            (Some(_), _) => Some(Setting::Calibration),
            (None, Some(_)) => Some(Setting::SelfCalibration),
            (None, None) => None,
        }
    }

    /// The library's calibration options; `None` without --calibrate(-self).
    fn options(&self) -> Result<Option<CalibrationOptions>> {
        let Some(source) = CalibrationSource::from_settings(
            self.calibrate.clone(),
            self.calibrate_ids,
            self.calibrate_offset,
            self.calibrate_bytes,
            self.calibrate_self,
            self.calibrate_seed,
        ) else {
            return Ok(None);
        };
        let settings = CalibrationSettings {
            damp: self.damp,
            act_order: self.act_order,
            min_tokens_per_column: self.min_tokens_per_column,
        };
        let (window, weighting) = (self.calibrate_window, self.router_weighting);
        Ok(Some(CalibrationOptions::with_settings(
            source, window, settings, weighting,
        )?))
    }

    /// Runs `f` (collecting the calibration) for the model at `model`, its errors with the
    /// options that would avoid them; `None` without --calibrate(-self).
    pub fn run<T>(
        &self,
        model: &Path,
        f: impl FnOnce(&CalibrationOptions) -> Result<T, ReportError>,
    ) -> Result<Option<T>> {
        let Some(c) = self.options()? else {
            return Ok(None);
        };
        Ok(Some(f(&c).map_err(|e| with_hints(e, model))?))
    }
}

/// The library's error with the options that would avoid it.
fn with_hints(e: ReportError, model: &Path) -> anyhow::Error {
    match e {
        ReportError::Model(ModelError::Memory { check, msg }) => anyhow!(match check {
            MemoryCheck::Stages => format!(
                "{msg}; take fewer tokens (--calibrate-bytes or a smaller --calibrate-self)"
            ),
            MemoryCheck::FloatModel => format!(
                "{msg}; generate the text with `tquant run --temperature 1` from a quantized \
                 checkpoint and pass it with --calibrate"
            ),
        }),
        ReportError::EmptyWindow { path, offset, len, unit } => anyhow!(
            "--calibrate {}: nothing left after --calibrate-offset {offset} ({len} {unit} in the file)",
            path.display()
        ),
        ReportError::Model(e @ ModelError::AlreadyQuantized { .. }) => {
            anyhow!("--calibrate: {e}")
        }
        ReportError::Text(t @ TextError::Unsupported { .. }) => anyhow::Error::new(t).context(
            "--calibrate: text needs tokenizer.json beside the model (or a 256-token byte \
             vocabulary); or give token ids with --calibrate-ids",
        ),
        e => anyhow::Error::new(e).context(format!("loading {} for calibration", model.display())),
    }
}
