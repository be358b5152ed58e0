//! The converter as a front end asks for it: a quality preset or a recipe with separate
//! settings, in tquant's layout, another safetensors layout or GGUF, calibrating layer by layer
//! first when calibration is asked for (what `tquant convert` runs).

use crate::pipeline::{layer_by_layer, CalibrationOptions, CalibrationSource};
use crate::{ReportError, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tquant_convert::calibration::CalibrationSettings;
use tquant_convert::convert::{Progress, RunOptions};
use tquant_convert::gguf::{convert_gguf, GgufOptions, GgufSummary};
use tquant_convert::{ConvertSummary, KeepAs, Layout, Overrides, Policy, Quality, Recipe, Setting};
use tquant_model::calibrate::RouterWeighting;
use tquant_model::calibration_run::LayerByLayer;

/// Calibration as a front end's settings give it: a file, or tokens the float model writes,
/// and how GPTQ uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationRequest {
    /// The calibration file: text, or token ids with `ids`.
    pub file: Option<PathBuf>,
    /// `file` holds little-endian u32 token ids (offset and length then count ids).
    pub ids: bool,
    /// Bytes (ids) of `file` skipped at its start.
    pub offset: usize,
    /// Bytes (ids) of `file` used after the offset (default: the rest).
    pub len: Option<usize>,
    /// Without a file: this many tokens the float model writes itself.
    pub self_tokens: Option<usize>,
    /// Seed of the self-generated text.
    pub seed: u64,
    /// Tokens per calibration chunk (and per self-generated sequence).
    pub window: usize,
    /// GPTQ damping, act-order and the tokens a matrix needs.
    pub settings: CalibrationSettings,
    /// How routed experts count their tokens.
    pub weighting: RouterWeighting,
}

impl Default for CalibrationRequest {
    /// No calibration; the default window (256), GPTQ settings and weighting.
    fn default() -> Self {
        Self {
            file: None,
            ids: false,
            offset: 0,
            len: None,
            self_tokens: None,
            seed: 0,
            window: 256,
            settings: CalibrationSettings::default(),
            weighting: RouterWeighting::Routed,
        }
    }
}

impl CalibrationRequest {
    /// The setting that asks for calibration (a file first), if any.
    pub fn setting(&self) -> Option<Setting> {
        match (&self.file, self.self_tokens) {
            (Some(_), _) => Some(Setting::Calibration),
            (None, Some(_)) => Some(Setting::SelfCalibration),
            (None, None) => None,
        }
    }

    /// The validated calibration options; `None` when no calibration is asked for.
    pub fn options(&self) -> Result<Option<CalibrationOptions>> {
        let Some(source) = CalibrationSource::from_settings(
            self.file.clone(),
            self.ids,
            self.offset,
            self.len,
            self.self_tokens,
            self.seed,
        ) else {
            return Ok(None);
        };
        let (window, weighting) = (self.window, self.weighting);
        let options = CalibrationOptions::with_settings(source, window, self.settings, weighting)?;
        Ok(Some(options))
    }

    /// Runs `f`, which collects the calibration for the float model at `model`, with the
    /// options; `None` when no calibration is asked for. `f`'s errors come back as
    /// [`ReportError::Calibration`], so that a front end can say which of its settings would
    /// avoid them ([`crate::messages`]).
    pub fn run<T>(
        &self,
        model: &Path,
        f: impl FnOnce(&CalibrationOptions) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some(options) = self.options()? else {
            return Ok(None);
        };
        let calibrated = f(&options).map_err(|e| ReportError::Calibration {
            model: model.to_path_buf(),
            source: Box::new(e),
        })?;
        Ok(Some(calibrated))
    }
}

/// A conversion as a front end's settings give it: [`ConvertRequest::run`].
#[derive(Debug, Clone, Default)]
pub struct ConvertRequest {
    /// The quality preset (tquant layout only; default: balanced); the other settings given
    /// replace its parts ([`Quality::apply`]).
    pub quality: Option<Quality>,
    /// The recipe (default: the preset's, or the layout's).
    pub format: Option<String>,
    /// Settings replacing the recipe's.
    pub overrides: Overrides,
    /// The on-disk layout.
    pub layout: Layout,
    /// Which tensors are quantized, kept and left out.
    pub policy: Policy,
    /// How the embeddings and the output head are stored.
    pub keep_as: Option<KeepAs>,
    /// Worker threads (`None` or 0: one per core).
    pub threads: Option<usize>,
    /// Replace an existing output tquant wrote.
    pub force: bool,
    /// GGUF only: the directory with tokenizer.json, when not the checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// Calibration (GPTQ), layer by layer before the conversion.
    pub calibration: CalibrationRequest,
}

/// What [`ConvertRequest::run`] wrote. Its text (`Display`) and JSON (`Serialize`) are the
/// summary's, the text followed by what the calibration covered when there was one.
#[derive(Debug)]
#[non_exhaustive]
pub enum Converted {
    /// A safetensors checkpoint (any layout but GGUF).
    Safetensors {
        /// What was written.
        summary: Box<ConvertSummary>,
        /// The layer-by-layer calibration it was quantized with.
        calibration: Option<Arc<LayerByLayer>>,
    },
    /// A GGUF file.
    Gguf(GgufSummary),
}

impl fmt::Display for Converted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Safetensors {
                summary,
                calibration: Some(cal),
            } => writeln!(f, "{summary}{}", cal.describe()),
            Self::Safetensors { summary, .. } => write!(f, "{summary}"),
            Self::Gguf(summary) => write!(f, "{summary}"),
        }
    }
}

impl serde::Serialize for Converted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Safetensors { summary, .. } => summary.serialize(s),
            Self::Gguf(summary) => summary.serialize(s),
        }
    }
}

impl ConvertRequest {
    /// Converts the checkpoint `input` into `output`: the preset's parts where no setting
    /// replaces them (tquant layout), the checks of the options, the layer-by-layer
    /// calibration when asked for (a `gptq` recipe needs it), then the converter, which
    /// reports its bytes to `progress` (GGUF does not).
    pub fn run(&self, input: &Path, output: &Path, progress: &dyn Progress) -> Result<Converted> {
        let (mut format, mut keep_as) = (self.format.as_deref(), self.keep_as);
        let mut calibration = self.calibration.clone();
        if self.layout == Layout::Tquant {
            let quality = self.quality.unwrap_or_default();
            let preset = quality.apply(format, keep_as, calibration.setting());
            (format, keep_as) = (Some(preset.recipe), Some(preset.keep_as));
            let tokens = calibration.self_tokens.or(preset.self_calibration_tokens);
            calibration.self_tokens = tokens;
        } else if self.quality.is_some() {
            return Err(only_for(Setting::Quality, Layout::Tquant));
        }
        let converting = |e: ReportError| e.context(format!("converting {}", input.display()));
        if self.layout == Layout::Gguf {
            let setting = calibration.setting();
            let opts = GgufOptions {
                policy: self.policy.clone(),
                tokenizer: self.tokenizer.clone(),
                force: self.force,
                ..GgufOptions::with_settings(format, &self.overrides, setting, keep_as)?
            };
            let summary = convert_gguf(input, output, &opts).map_err(|e| converting(e.into()))?;
            return Ok(Converted::Gguf(summary));
        }
        if self.tokenizer.is_some() {
            return Err(only_for(Setting::Tokenizer, Layout::Gguf));
        }
        let (recipe, builder) = Recipe::builder_with(format, self.layout, &self.overrides)?;
        let builder = match keep_as {
            Some(keep) => builder.keep_as(keep),
            None => builder,
        };
        let mut opts = builder.policy(self.policy.clone()).build()?;
        recipe.check_calibrated(calibration.setting().is_some())?;
        let threads = self.threads.unwrap_or(0);
        let layerwise = calibration.run(input, |c| {
            layer_by_layer(input, output, &opts, c, threads, self.force)
        })?;
        opts.staged_calibration = layerwise.as_ref().map(|l| l.staged());
        opts.validate()?;
        let run = RunOptions {
            force: self.force,
            threads: self.threads,
        };
        let summary = tquant_convert::convert(input, output, &opts, &run, progress)
            .map_err(|e| converting(e.into()))?;
        Ok(Converted::Safetensors {
            summary: Box::new(summary),
            calibration: layerwise,
        })
    }
}

fn only_for(setting: Setting, layout: Layout) -> ReportError {
    ReportError::OnlyForLayout { setting, layout }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibration_request_names_its_source_and_validates_its_settings() {
        let none = CalibrationRequest::default();
        assert_eq!(none.setting(), None);
        assert!(none.options().unwrap().is_none());
        assert!(none.run(Path::new("/m"), |_| Ok(1)).unwrap().is_none());
        let file = CalibrationRequest {
            file: Some("/t.bin".into()),
            ids: true,
            offset: 4,
            self_tokens: Some(64),
            ..CalibrationRequest::default()
        };
        // A file wins over self-generated text.
        assert_eq!(file.setting(), Some(Setting::Calibration));
        let source = file.options().unwrap().unwrap().source;
        let want = CalibrationSource::Ids {
            path: "/t.bin".into(),
            offset: 4,
            len: None,
        };
        assert_eq!(source, want);
        let generated = CalibrationRequest {
            self_tokens: Some(64),
            seed: 7,
            ..CalibrationRequest::default()
        };
        assert_eq!(generated.setting(), Some(Setting::SelfCalibration));
        let zero_window = CalibrationRequest {
            window: 0,
            ..generated.clone()
        };
        assert!(matches!(
            zero_window.options(),
            Err(ReportError::Convert(_))
        ));
        // Only the collection's errors are the calibration's, with the model they loaded.
        let failed = generated.run(Path::new("/m"), |_| -> Result<()> {
            Err(ReportError::EmptyFormatList)
        });
        match failed {
            Err(ReportError::Calibration { model, source }) => {
                assert_eq!(model, Path::new("/m"));
                assert!(matches!(*source, ReportError::EmptyFormatList));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn settings_for_another_layout_are_refused_before_any_file_is_read() {
        let (input, output) = (Path::new("/nonexistent/in"), Path::new("/nonexistent/out"));
        let progress = tquant_convert::convert::NoProgress;
        let request = ConvertRequest {
            quality: Some(Quality::Fast),
            layout: Layout::Bnb,
            ..ConvertRequest::default()
        };
        let e = request.run(input, output, &progress).unwrap_err();
        assert_eq!(e.to_string(), "quality is for layout tquant");
        let request = ConvertRequest {
            tokenizer: Some("/tok".into()),
            ..ConvertRequest::default()
        };
        let e = request.run(input, output, &progress).unwrap_err();
        assert_eq!(e.to_string(), "tokenizer is for layout gguf");
    }
}
