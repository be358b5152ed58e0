//! One call from a float checkpoint to a quantized one: convert with a recipe, with calibration
//! (GPTQ, layer by layer) when the recipe asks for it.

use crate::text_input::TokenizedText;
use crate::{ReportError, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tquant_convert::calibration::{Calibration, CalibrationSettings};
use tquant_convert::convert::{NoProgress, Progress, RunOptions};
use tquant_convert::{ConvertError, ConvertOptions, ConvertSummary, Recipe};
use tquant_formats::{BlockSize, ScaleDtype};
use tquant_model::calibrate::RouterWeighting;
use tquant_model::calibration_run::{self, token_window, CalibrationPlan, LayerByLayer};
use tquant_model::eval::read_token_ids;
use tquant_model::generate::self_calibration_tokens;
use tquant_model::Model;

/// Where calibration tokens come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibrationSource {
    /// `len` bytes (default: the rest) of a text file from `offset`, tokenized with the
    /// model's tokenizer.json (byte by byte for a byte vocabulary).
    Text {
        /// The text file.
        path: PathBuf,
        /// Bytes skipped at its start.
        offset: usize,
        /// Bytes used after the offset (default: the rest).
        len: Option<usize>,
    },
    /// Little-endian u32 token ids; offset and length count ids.
    Ids {
        /// The file of ids.
        path: PathBuf,
        /// Ids skipped at its start.
        offset: usize,
        /// Ids used after the offset (default: the rest).
        len: Option<usize>,
    },
    /// `tokens` the float model writes itself, in sequences of the window, each from a random
    /// first token, sampled at temperature 1.
    SelfGenerated {
        /// Tokens to generate.
        tokens: usize,
        /// Seed of the sampling.
        seed: u64,
    },
}

impl CalibrationSource {
    /// The source a front end's settings name: `file` (little-endian u32 token ids with `ids`,
    /// else text; `len` of it after `offset`), else `self_tokens` tokens the model writes from
    /// `seed`; `None` for neither.
    pub fn from_settings(
        file: Option<PathBuf>,
        ids: bool,
        offset: usize,
        len: Option<usize>,
        self_tokens: Option<usize>,
        seed: u64,
    ) -> Option<Self> {
        match (file, self_tokens) {
            (Some(path), _) if ids => Some(Self::Ids { path, offset, len }),
            (Some(path), _) => Some(Self::Text { path, offset, len }),
            (None, Some(tokens)) => Some(Self::SelfGenerated { tokens, seed }),
            (None, None) => None,
        }
    }
}

/// How calibration runs: its tokens, chunk window, GPTQ settings and expert weighting.
#[derive(Debug, Clone)]
pub struct CalibrationOptions {
    /// Where the tokens come from.
    pub source: CalibrationSource,
    /// Tokens per chunk (and per generated sequence).
    pub window: usize,
    /// GPTQ damping, act-order and the tokens a matrix needs.
    pub settings: CalibrationSettings,
    /// How routed experts count their tokens.
    pub weighting: RouterWeighting,
}

impl CalibrationOptions {
    /// Calibration from `source` with the default window (256), damping, weighting and
    /// minimum tokens per column.
    pub fn new(source: CalibrationSource) -> Self {
        Self {
            source,
            window: 256,
            settings: CalibrationSettings::default(),
            weighting: RouterWeighting::Routed,
        }
    }

    /// Calibration from `source` in chunks of `window` tokens with `settings` and `weighting`,
    /// validated ([`Self::validate`]).
    pub fn with_settings(
        source: CalibrationSource,
        window: usize,
        settings: CalibrationSettings,
        weighting: RouterWeighting,
    ) -> Result<Self> {
        let options = Self {
            source,
            window,
            settings,
            weighting,
        };
        options.validate()?;
        Ok(options)
    }

    /// Refuses a window of no tokens and a damping or token threshold that is not a number
    /// >= 0 (the settings each name, [`tquant_convert::Setting`]).
    pub fn validate(&self) -> Result<()> {
        self.settings.validate()?;
        if self.window == 0 {
            return Err(ConvertError::EmptyCalibrationWindow.into());
        }
        Ok(())
    }

    /// The tokens and their description, for the float model at `model`; generating them
    /// opens the float model, returned for reuse.
    pub fn plan(&self, model: &Path, threads: usize) -> Result<(CalibrationPlan, Option<Model>)> {
        self.validate()?;
        let mut float = None;
        let (tokens, source) = match &self.source {
            CalibrationSource::Text { path, offset, len }
            | CalibrationSource::Ids { path, offset, len } => {
                let ids = matches!(self.source, CalibrationSource::Ids { .. });
                let bytes = std::fs::read(path)
                    .map_err(|e| ReportError::io(format!("reading {}", path.display()), e))?;
                let all_ids =
                    if ids {
                        Some(read_token_ids(&bytes).map_err(|e| {
                            ReportError::from(e).context(path.display().to_string())
                        })?)
                    } else {
                        None
                    };
                let (unit, n) = match &all_ids {
                    Some(i) => ("ids", i.len()),
                    None => ("bytes", bytes.len()),
                };
                let (start, end) =
                    token_window(n, *offset, *len).ok_or_else(|| ReportError::EmptyWindow {
                        path: path.clone(),
                        offset: *offset,
                        len: n,
                        unit,
                    })?;
                let tokens = match all_ids {
                    Some(i) => i[start..end].to_vec(),
                    None => {
                        let config = tquant_model::Config::from_path(model)?;
                        let v = tquant_text::Vocabulary::open(model, Some(config.vocab_size))?;
                        TokenizedText::from_bytes(&v, &bytes, path, start, Some(end - start))?.ids
                    }
                };
                let what = format!(
                    "{} {unit} {start}..{end}, window {}",
                    path.display(),
                    self.window
                );
                (tokens, what)
            }
            CalibrationSource::SelfGenerated { tokens, seed } => {
                let f = float.insert(calibration_run::open_float_for_generation(model, threads)?);
                let t = self_calibration_tokens(f, *tokens, self.window, *seed)
                    .map_err(|e| ReportError::from(e).context("generating the calibration text"))?;
                let what = format!(
                    "self-generated by the model: {tokens} tokens in sequences of {}, each from \
                     a random first token, sampled at temperature 1, seed {seed}",
                    self.window
                );
                (t, what)
            }
        };
        let plan = CalibrationPlan {
            tokens,
            source,
            window: self.window,
            settings: self.settings,
            weighting: self.weighting,
        };
        Ok((plan, float))
    }

    /// Runs the float model at `model` over the calibration tokens and keeps every linear
    /// layer's input statistics at once (what a report's calibrated recipes quantize with).
    pub fn collect(&self, model: &Path, threads: usize) -> Result<Calibration> {
        let (plan, float) = self.plan(model, threads)?;
        Ok(calibration_run::collect_whole(model, float, plan, threads)?)
    }
}

/// What [`quantize_checkpoint`] does: the recipe at a block size and scale dtype, the
/// calibration a `gptq` recipe needs, and the worker threads (0: one per core).
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// How to quantize.
    pub recipe: Recipe,
    /// Block length.
    pub block: BlockSize,
    /// Scale dtype.
    pub scale_dtype: ScaleDtype,
    /// The calibration a `gptq` recipe needs.
    pub calibration: Option<CalibrationOptions>,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Replace an existing output that tquant wrote.
    pub force: bool,
}

impl QuantizeOptions {
    /// `recipe` in blocks of 64 with f16 scales, no calibration.
    pub fn new(recipe: Recipe) -> Self {
        Self {
            recipe,
            block: BlockSize::Elements(64),
            scale_dtype: ScaleDtype::F16,
            calibration: None,
            threads: 0,
            force: false,
        }
    }
}

/// Converts the float checkpoint `input` into a quantized one at `output` with the recipe,
/// calibrating layer by layer first when the recipe is a `gptq` one.
pub fn quantize_checkpoint(
    input: &Path,
    output: &Path,
    options: &QuantizeOptions,
) -> Result<ConvertSummary> {
    let mut opts = options.recipe.options(options.block, options.scale_dtype)?;
    let recipe = &options.recipe;
    recipe.check_calibrated(options.calibration.is_some())?;
    let layerwise = match options.calibration.as_ref().filter(|_| recipe.gptq) {
        Some(c) => Some(layer_by_layer(
            input,
            output,
            &opts,
            c,
            options.threads,
            options.force,
        )?),
        None => None,
    };
    opts.staged_calibration = layerwise.as_ref().map(|l| l.staged());
    convert(
        input,
        output,
        &opts,
        options.threads,
        options.force,
        &NoProgress,
    )
}

/// The staged calibration for converting `input` to `output` with `opts`; the layout and the
/// output are checked first, before the float model runs.
pub fn layer_by_layer(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    calibration: &CalibrationOptions,
    threads: usize,
    force: bool,
) -> Result<Arc<LayerByLayer>> {
    tquant_convert::calibration::check_layout(opts.layout)?;
    tquant_convert::check_output(output, force, &|_| false)?;
    let (plan, float) = calibration.plan(input, threads)?;
    // The whole float model (loaded to generate) is not needed stage by stage.
    drop(float);
    Ok(LayerByLayer::new(input, plan, threads)?)
}

/// The converter with validated options.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    threads: usize,
    force: bool,
    progress: &dyn Progress,
) -> Result<ConvertSummary> {
    opts.validate()?;
    let run = RunOptions {
        force,
        threads: (threads > 0).then_some(threads),
    };
    tquant_convert::convert(input, output, opts, &run, progress)
        .map_err(|e| ReportError::from(e).context(format!("converting {}", input.display())))
}
