//! Running the float model for calibration: all layers at once for many recipes
//! ([`collect_whole`]), or stage by stage while the converter quantizes ([`LayerByLayer`], the
//! converter's [`CalibrationStages`]); and the memory checks that refuse a run that would not fit.

use crate::calibrate::{
    capture, capture_next_stage, largest_stage, site_tensors, stage_calibration, stage_sites,
    to_calibration, CaptureOptions, RouterWeighting,
};
use crate::layerwise::hidden_arrays;
use crate::{
    CheckpointSource, Config, LayerwiseRun, Model, ModelError, Options, Stage, TensorSource,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tquant_convert::calibration::{
    Calibration, CalibrationSettings, CalibrationStages, Lookup, StagedCalibration,
};
use tquant_convert::ConvertError;

/// Which memory check refused a calibration run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryCheck {
    /// Calibrating in stages: every token's hidden state plus the largest stage's statistics.
    Stages,
    /// Generating calibration text: the whole float model as f32.
    FloatModel,
}

/// What a calibration run needs besides the model: the tokens, what they are, the window each
/// chunk of them runs in, GPTQ's settings and how routed experts count tokens.
#[derive(Debug, Clone)]
pub struct CalibrationPlan {
    /// The calibration tokens.
    pub tokens: Vec<u32>,
    /// One line on where the tokens come from (kept in the calibration's description).
    pub source: String,
    /// Tokens per chunk; each chunk runs from an empty cache.
    pub window: usize,
    /// GPTQ's settings.
    pub settings: CalibrationSettings,
    /// How routed experts' tokens count.
    pub weighting: RouterWeighting,
}

impl CalibrationPlan {
    fn outline(&self) -> Calibration {
        Calibration::new(self.settings, self.source.clone(), self.tokens.len() as u64)
    }
}

/// `offset..offset + max` of a sequence of `len` (bytes or ids), cut to the sequence; `None`
/// when nothing is left after the offset.
pub fn token_window(len: usize, offset: usize, max: Option<usize>) -> Option<(usize, usize)> {
    let start = offset.min(len);
    let end = max.map_or(len, |n| start.saturating_add(n).min(len));
    (start < end).then_some((start, end))
}

/// The float model's run-time options: `threads` workers, exact kernels.
fn options(threads: usize) -> Options {
    Options {
        threads,
        ..Options::default()
    }
}

/// The float checkpoint at `model`, refused when it is already quantized.
pub fn float_checkpoint(model: &Path) -> Result<CheckpointSource, ModelError> {
    let src = crate::checkpoint_source(model)?;
    if src.checkpoint().is_quantized() {
        return Err(ModelError::AlreadyQuantized {
            path: model.to_path_buf(),
        });
    }
    Ok(src)
}

/// Opens the whole float model for generating calibration text, refused when its f32 weights
/// exceed the memory available.
pub fn open_float_for_generation(model: &Path, threads: usize) -> Result<Model, ModelError> {
    check_float_model_memory(&float_checkpoint(model)?)?;
    Model::open(model, options(threads))
}

/// Runs the float model at `model` over the plan's tokens and keeps every layer's statistics
/// (for quantizing many recipes with them). `float` is the model when already open.
pub fn collect_whole(
    model: &Path,
    float: Option<Model>,
    plan: CalibrationPlan,
    threads: usize,
) -> Result<Calibration, ModelError> {
    let src = float_checkpoint(model)?;
    let float = match float {
        Some(f) => f,
        None => Model::open(model, options(threads))?,
    };
    let config = float.config().clone();
    let capture_opts = CaptureOptions {
        window: plan.window,
        weighting: plan.weighting,
    };
    let outline = plan.outline();
    let moments = capture(&float, &plan.tokens, &capture_opts)?;
    let has = |name: &str| src.contains(name);
    let all = 0..config.num_hidden_layers;
    to_calibration(moments, &config, &has, outline, all)
}

/// Calibrating in stages keeps every calibration token's hidden state (`tokens x hidden` f32;
/// three such arrays through a MoE layer: the residual, the feed-forward input and the routed
/// experts' sum) and one stage's statistics (an f64 `d x d` second moment per input site, and
/// as much again for the GPTQ factors while the stage's matrices are quantized): refused when
/// that, for the largest stage, exceeds half the memory the system has available (the rest is
/// for the stage's weights and the work of running it).
pub fn check_stage_memory(config: &Config, tokens: usize) -> Result<(), ModelError> {
    let arrays = hidden_arrays(config);
    let hidden = tokens as u64 * config.hidden_size as u64 * 4 * arrays;
    let (largest, stats) = largest_stage(config).unwrap_or((Stage::Attention(0), 0));
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if hidden + 2 * stats > available / 2 {
        return Err(ModelError::Memory {
            check: MemoryCheck::Stages,
            msg: format!(
                "calibrating in stages keeps the hidden state of every calibration token: \
                 {tokens} tokens x {} values x 4 bytes x {arrays} arrays = {:.1} GB, plus {:.1} \
                 GB of statistics and GPTQ factors for its largest stage ({largest:?}): more \
                 than half the {:.1} GB of memory available",
                config.hidden_size,
                hidden as f64 / 1e9,
                2.0 * stats as f64 / 1e9,
                available as f64 / 1e9
            ),
        });
    }
    Ok(())
}

/// Generation runs the whole float model, held as f32: refused when that exceeds the memory
/// the system has available.
pub fn check_float_model_memory(src: &CheckpointSource) -> Result<(), ModelError> {
    let ckpt = src.checkpoint();
    let float_bytes: u64 = ckpt
        .raw_names()
        .filter_map(|name| ckpt.raw(name).ok())
        .map(|t| t.numel() as u64 * 4)
        .sum();
    match available_memory() {
        Some(available) if float_bytes > available => Err(ModelError::Memory {
            check: MemoryCheck::FloatModel,
            msg: format!(
                "generating calibration text runs the whole float model, {:.1} GB as f32, more \
                 than the {:.1} GB of memory available",
                float_bytes as f64 / 1e9,
                available as f64 / 1e9
            ),
        }),
        _ => Ok(()),
    }
}

/// Memory the system can still give (`MemAvailable` of /proc/meminfo), where known.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// [`CalibrationStages`] with the stages of a [`LayerwiseRun`], run in order: a decoder layer's
/// attention and router, then its MLP, or each routed expert and then the shared experts, so
/// only one stage's weights and statistics are held (and every calibration token's hidden state).
pub struct LayerByLayer {
    run: Mutex<LayerwiseRun<CheckpointSource>>,
    stages: usize,
    /// The stage of each tensor (and expert of a fused tensor) with statistics.
    stage_of: HashMap<(String, Option<usize>), usize>,
    weighting: RouterWeighting,
    outline: Calibration,
    /// Matrices with statistics so far, and how many of them from too few tokens.
    coverage: Mutex<(usize, usize)>,
}

impl std::fmt::Debug for LayerByLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerByLayer")
            .field("stages", &self.stages)
            .field("source", &self.outline.source)
            .finish_non_exhaustive()
    }
}

impl LayerByLayer {
    /// The staged run of the float model at `model` over the plan's tokens, after the memory
    /// check.
    pub fn new(
        model: &Path,
        plan: CalibrationPlan,
        threads: usize,
    ) -> Result<Arc<Self>, ModelError> {
        let src = float_checkpoint(model)?;
        let config = Config::from_path(model)?;
        check_stage_memory(&config, plan.tokens.len())?;
        let outline = plan.outline();
        let run = LayerwiseRun::new(config, src, options(threads), &plan.tokens, plan.window)?;
        let stage_of = stage_index(&run);
        Ok(Arc::new(Self {
            stages: run.stages().len(),
            run: Mutex::new(run),
            stage_of,
            weighting: plan.weighting,
            outline,
            coverage: Mutex::new((0, 0)),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LayerwiseRun<CheckpointSource>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the converter gets.
    pub fn staged(self: &Arc<Self>) -> StagedCalibration {
        StagedCalibration(self.clone())
    }

    /// [`describe`] of the layers collected so far.
    pub fn describe(&self) -> String {
        let (matrices, few) = *self.coverage.lock().unwrap_or_else(|p| p.into_inner());
        describe_counts(&self.outline, matrices, few)
    }
}

impl CalibrationStages for LayerByLayer {
    fn outline(&self) -> Calibration {
        Calibration::new(
            self.outline.settings,
            self.outline.source.clone(),
            self.outline.tokens,
        )
    }

    fn stages(&self) -> usize {
        self.stages
    }

    fn stage_of(&self, name: &str, expert: Option<usize>) -> Option<usize> {
        self.stage_of.get(&(name.to_string(), expert)).copied()
    }

    fn collect(&self, stage: usize) -> Result<Calibration, ConvertError> {
        let mut run = self.lock();
        let fail = |e: ModelError| match e {
            ModelError::Convert(c) => c,
            e => ConvertError::Stage {
                stage,
                source: Box::new(e),
            },
        };
        if run.next_index() != stage {
            return Err(ConvertError::StageOrder {
                asked: stage,
                next: run.next_index(),
            });
        }
        let (stage, moments) = capture_next_stage(&mut run, self.weighting).map_err(fail)?;
        let has = |name: &str| run.source().contains(name);
        let cal =
            stage_calibration(moments, run.config(), &has, self.outline(), stage).map_err(fail)?;
        let (matrices, few) = coverage(&cal);
        let mut total = self.coverage.lock().unwrap_or_else(|p| p.into_inner());
        *total = (total.0 + matrices, total.1 + few);
        Ok(cal)
    }
}

/// The stage of every tensor (and expert of a fused tensor) the checkpoint has statistics for.
fn stage_index<S: TensorSource>(run: &LayerwiseRun<S>) -> HashMap<(String, Option<usize>), usize> {
    let mut index = HashMap::new();
    for (k, &stage) in run.stages().iter().enumerate() {
        for (layer, site, _) in stage_sites(run.config(), stage) {
            for key in site_tensors(layer, site) {
                if run.source().contains(&key.0) {
                    index.insert(key, k);
                }
            }
        }
    }
    index
}

/// Matrices with statistics, and how many of them from too few tokens to be calibrated.
fn coverage(cal: &Calibration) -> (usize, usize) {
    let few = cal
        .iter()
        .filter(|((name, expert), h)| {
            matches!(cal.lookup(name, *expert, h.dim()), Lookup::TooFewTokens(_))
        })
        .count();
    (cal.len(), few)
}

/// One line on what a calibration covers: matrices with statistics and those that will fall
/// back to plain rounding for want of tokens.
pub fn describe(cal: &Calibration) -> String {
    let (matrices, few) = coverage(cal);
    describe_counts(cal, matrices, few)
}

fn describe_counts(cal: &Calibration, matrices: usize, few: usize) -> String {
    format!(
        "calibration: {} tokens ({}); statistics for {} matrices, {} of them from fewer than \
         {} tokens per column (quantized without calibration)",
        cal.tokens, cal.source, matrices, few, cal.settings.min_tokens_per_column
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_window_cuts_to_the_sequence_and_refuses_an_empty_one() {
        assert_eq!(token_window(10, 2, Some(3)), Some((2, 5)));
        assert_eq!(token_window(10, 2, None), Some((2, 10)));
        assert_eq!(token_window(10, 8, Some(100)), Some((8, 10)));
        assert_eq!(token_window(10, 10, None), None);
        assert_eq!(token_window(10, 99, Some(1)), None);
        assert_eq!(token_window(10, 0, Some(0)), None);
    }

    #[test]
    fn available_memory_is_read_where_the_system_has_it() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(available_memory().is_some_and(|b| b > 0));
        }
    }
}
