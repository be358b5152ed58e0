//! `--calibrate FILE` and its settings, shared by `tquant convert` and `tquant report`: runs the
//! float model over the calibration text and collects every linear layer's input statistics for
//! GPTQ (see docs/calibration.md).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tquant_convert::calibration::{
    Calibration, CalibrationSettings, Lookup, DEFAULT_MIN_TOKENS_PER_COLUMN,
};
use tquant_formats::gptq::DEFAULT_DAMP;
use tquant_model::calibrate::{capture, to_calibration, CaptureOptions, RouterWeighting};
use tquant_model::eval::read_token_ids;
use tquant_model::{Model, Options, TensorSource};

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Calibration-aware quantization (GPTQ): run the float model over FILE and quantize each
    /// matrix with error feedback from the statistics of its real inputs. FILE is text, read
    /// byte by byte (byte-vocabulary models), or token ids with --calibrate-ids.
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,
    /// FILE holds little-endian u32 token ids (any vocabulary); offsets and lengths count ids.
    #[arg(long, requires = "calibrate")]
    pub calibrate_ids: bool,
    /// Skip the first N bytes of FILE (e.g. the part an evaluation scores).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub calibrate_offset: usize,
    /// Use at most N bytes of FILE after the offset (default: the rest).
    #[arg(long, value_name = "N")]
    pub calibrate_bytes: Option<usize>,
    /// Tokens per calibration chunk; each chunk runs from an empty cache.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub calibrate_window: usize,
    /// GPTQ damping, relative to the mean diagonal of each input second moment.
    #[arg(long, default_value_t = DEFAULT_DAMP)]
    pub damp: f64,
    /// GPTQ act-order: quantize the columns with the largest inputs first.
    #[arg(long)]
    pub act_order: bool,
    /// How routed experts count their tokens: `routed` (by the routing weight squared, the
    /// expert's share of the output error) or `uniform`.
    #[arg(long, default_value = "routed")]
    pub router_weighting: String,
    /// Calibrate a matrix only when at least this many tokens per input column reached it;
    /// rarer experts are quantized without calibration.
    #[arg(long, default_value_t = DEFAULT_MIN_TOKENS_PER_COLUMN, value_name = "X")]
    pub min_tokens_per_column: f64,
}

impl CalibrateArgs {
    pub fn settings(&self) -> Result<CalibrationSettings> {
        if !(self.damp.is_finite() && self.damp >= 0.0) {
            bail!("--damp must be a number >= 0, not {}", self.damp);
        }
        if !(self.min_tokens_per_column.is_finite() && self.min_tokens_per_column >= 0.0) {
            bail!(
                "--min-tokens-per-column must be a number >= 0, not {}",
                self.min_tokens_per_column
            );
        }
        Ok(CalibrationSettings {
            damp: self.damp,
            act_order: self.act_order,
            min_tokens_per_column: self.min_tokens_per_column,
        })
    }

    /// The calibration tokens: FILE's bytes (or ids) from the offset, at most the length asked.
    fn tokens(&self, file: &Path, vocab: usize) -> Result<(Vec<u32>, String)> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let all: Vec<u32> = if self.calibrate_ids {
            read_token_ids(&bytes).with_context(|| file.display().to_string())?
        } else {
            if vocab != 256 {
                bail!(
                    "--calibrate {}: text is read byte by byte, but this model's vocabulary has \
                     {vocab} tokens; give token ids with --calibrate-ids",
                    file.display()
                );
            }
            bytes.iter().map(|&b| b as u32).collect()
        };
        let start = self.calibrate_offset.min(all.len());
        let end = match self.calibrate_bytes {
            Some(n) => start.saturating_add(n).min(all.len()),
            None => all.len(),
        };
        if start >= end {
            bail!(
                "--calibrate {}: nothing left after --calibrate-offset {} ({} {} in the file)",
                file.display(),
                self.calibrate_offset,
                all.len(),
                if self.calibrate_ids { "ids" } else { "bytes" }
            );
        }
        let unit = if self.calibrate_ids { "ids" } else { "bytes" };
        let source = format!(
            "{} {unit} {start}..{end}, window {}",
            file.display(),
            self.calibrate_window
        );
        Ok((all[start..end].to_vec(), source))
    }

    /// Runs the float model at `model` over the calibration tokens; `None` without --calibrate.
    pub fn collect(&self, model: &Path, threads: usize) -> Result<Option<Arc<Calibration>>> {
        let Some(file) = &self.calibrate else {
            return Ok(None);
        };
        let settings = self.settings()?;
        let weighting: RouterWeighting =
            self.router_weighting.parse().map_err(anyhow::Error::msg)?;
        let src = tquant_model::checkpoint_source(model)
            .with_context(|| format!("loading {} for calibration", model.display()))?;
        if src.checkpoint().is_quantized() {
            bail!(
                "--calibrate runs the float model: {} is already quantized",
                model.display()
            );
        }
        let float = Model::open(
            model,
            Options {
                threads,
                ..Options::default()
            },
        )
        .with_context(|| format!("loading {} for calibration", model.display()))?;
        let (tokens, source) = self.tokens(file, float.config().vocab_size)?;
        let opts = CaptureOptions {
            window: self.calibrate_window,
            weighting,
        };
        let moments = capture(&float, &tokens, &opts)
            .with_context(|| format!("running the model over {}", file.display()))?;
        let has = |name: &str| src.contains(name);
        let cal = to_calibration(
            &moments,
            float.config(),
            &has,
            settings,
            source,
            tokens.len() as u64,
        )?;
        Ok(Some(Arc::new(cal)))
    }
}

/// One line on what a calibration covers: matrices with statistics and those that will fall
/// back to plain rounding for want of tokens.
pub fn describe(cal: &Calibration) -> String {
    let mut few = 0;
    for ((name, expert), h) in cal.iter() {
        if let Lookup::TooFewTokens(_) = cal.lookup(name, *expert, h.dim()) {
            few += 1;
        }
    }
    format!(
        "calibration: {} tokens ({}); statistics for {} matrices, {} of them from fewer than \
         {} tokens per column (quantized without calibration)",
        cal.tokens,
        cal.source,
        cal.len(),
        few,
        cal.settings.min_tokens_per_column
    )
}

/// The report's name of a variant quantized with the calibration: `gptq:nf4`, `gptq:nf4+search`;
/// `auto+gptq`, `auto+search+gptq` for the per-matrix choice.
pub fn calibrated_variant_name(name: &str) -> String {
    if name.starts_with("auto") {
        format!("{name}+gptq")
    } else {
        format!("gptq:{name}")
    }
}
