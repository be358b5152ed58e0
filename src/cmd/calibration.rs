//! `--calibrate FILE` and its settings, shared by `tquant convert` and `tquant report`: runs the
//! float model over the calibration text and collects every linear layer's input statistics for
//! GPTQ (see docs/calibration.md).

use super::text_input::{self, TokenizedText};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use tquant_convert::calibration::{
    Calibration, CalibrationSettings, CalibrationStages, Lookup, StagedCalibration,
    DEFAULT_MIN_TOKENS_PER_COLUMN,
};
use tquant_convert::ConvertError;
use tquant_formats::gptq::DEFAULT_DAMP;
use tquant_model::calibrate::{
    capture, capture_next_stage, largest_stage, site_tensors, stage_calibration, stage_sites,
    to_calibration, CaptureOptions, RouterWeighting,
};
use tquant_model::eval::read_token_ids;
use tquant_model::generate::self_calibration_tokens;
use tquant_model::layerwise::hidden_arrays;
use tquant_model::{CheckpointSource, LayerwiseRun, Model, Options, Stage, TensorSource};

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Calibration-aware quantization (GPTQ): run the float model over FILE and quantize each
    /// matrix with error feedback from the statistics of its real inputs. FILE is text,
    /// tokenized with the model's tokenizer.json (byte by byte for a byte vocabulary), or token
    /// ids with --calibrate-ids.
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,
    /// Calibration without calibration data: the float model writes N tokens itself (sequences
    /// of --calibrate-window tokens, each from a random first token, sampled at temperature 1),
    /// and GPTQ runs on those as on --calibrate FILE.
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
    /// Tokens per calibration chunk; each chunk runs from an empty cache (with
    /// --calibrate-self, also the length of each generated sequence).
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
        if self.calibrate_window == 0 {
            bail!("--calibrate-window must be at least 1 token");
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

    /// The calibration tokens: FILE's bytes from the offset, at most the length asked, tokenized
    /// with the model's tokenizer.json (byte by byte for a byte vocabulary); or FILE's ids.
    fn tokens(&self, file: &Path, model: &Path, vocab: usize) -> Result<(Vec<u32>, String)> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let ids = if self.calibrate_ids {
            Some(read_token_ids(&bytes).with_context(|| file.display().to_string())?)
        } else {
            None
        };
        let (unit, len) = match &ids {
            Some(ids) => ("ids", ids.len()),
            None => ("bytes", bytes.len()),
        };
        let start = self.calibrate_offset.min(len);
        let end = match self.calibrate_bytes {
            Some(n) => start.saturating_add(n).min(len),
            None => len,
        };
        if start >= end {
            bail!(
                "--calibrate {}: nothing left after --calibrate-offset {} ({len} {unit} in the file)",
                file.display(),
                self.calibrate_offset,
            );
        }
        let tokens = match ids {
            Some(ids) => ids[start..end].to_vec(),
            None => {
                let v = text_input::vocabulary(model, vocab, "--calibrate-ids")
                    .with_context(|| format!("--calibrate {}", file.display()))?;
                TokenizedText::from_bytes(&v, &bytes, file, start, Some(end - start))?.ids
            }
        };
        let source = format!(
            "{} {unit} {start}..{end}, window {}",
            file.display(),
            self.calibrate_window
        );
        Ok((tokens, source))
    }

    /// Whether --calibrate or --calibrate-self was given.
    pub fn enabled(&self) -> bool {
        self.calibrate.is_some() || self.calibrate_self.is_some()
    }

    /// `n` tokens `float` writes itself, and their description.
    fn generated(&self, float: &Model, n: usize) -> Result<(Vec<u32>, String)> {
        let (window, seed) = (self.calibrate_window, self.calibrate_seed);
        let tokens = self_calibration_tokens(float, n, window, seed)
            .context("generating the calibration text (--calibrate-self)")?;
        let source = format!(
            "self-generated by the model: {n} tokens in sequences of {window}, each from a \
             random first token, sampled at temperature 1, seed {seed}"
        );
        Ok((tokens, source))
    }

    /// What both ways of collecting need: the settings, weighting, the float checkpoint and its
    /// config, and the tokens with their description; `None` without --calibrate(-self). The
    /// float model, when --calibrate-self had to load it to generate, is left in `float`.
    fn prepare(
        &self,
        model: &Path,
        threads: usize,
        float: &mut Option<Model>,
    ) -> Result<Option<Prepared>> {
        if !self.enabled() {
            return Ok(None);
        }
        let settings = self.settings()?;
        let weighting = self.router_weighting.parse().map_err(anyhow::Error::msg)?;
        let src = tquant_model::checkpoint_source(model)
            .with_context(|| format!("loading {} for calibration", model.display()))?;
        if src.checkpoint().is_quantized() {
            bail!(
                "--calibrate runs the float model: {} is already quantized",
                model.display()
            );
        }
        let config = tquant_model::Config::from_path(model)
            .with_context(|| format!("loading {} for calibration", model.display()))?;
        let (tokens, source) = match (&self.calibrate, self.calibrate_self) {
            (Some(file), _) => self.tokens(file, model, config.vocab_size)?,
            (None, Some(n)) => {
                refuse_if_float_model_exceeds_memory(&src)?;
                let f = float.insert(open_float(model, threads)?);
                self.generated(f, n)?
            }
            (None, None) => return Ok(None),
        };
        let outline = Calibration::new(settings, source, tokens.len() as u64);
        Ok(Some(Prepared {
            weighting,
            src,
            config,
            tokens,
            outline,
        }))
    }

    /// For `tquant convert`: the calibration collected in stages while the converter quantizes
    /// (a decoder layer's attention and router, then its MLP, or each routed expert and then
    /// the shared experts), so only one stage's weights and statistics are held (and every
    /// calibration token's hidden state); `None` without --calibrate.
    pub fn layerwise(&self, model: &Path, threads: usize) -> Result<Option<Arc<LayerByLayer>>> {
        let mut float = None;
        let prepared = self.prepare(model, threads, &mut float)?;
        // The whole float model (loaded to generate) is not needed stage by stage.
        drop(float);
        let Some(p) = prepared else {
            return Ok(None);
        };
        refuse_if_stages_exceed_memory(&p.config, p.tokens.len())?;
        let run = LayerwiseRun::new(
            p.config,
            p.src,
            options(threads),
            &p.tokens,
            self.calibrate_window,
        )
        .with_context(|| format!("loading {} for calibration", model.display()))?;
        let stage_of = stage_index(&run);
        Ok(Some(Arc::new(LayerByLayer {
            stages: run.stages().len(),
            run: Mutex::new(run),
            stage_of,
            weighting: p.weighting,
            outline: p.outline,
            coverage: Mutex::new((0, 0)),
        })))
    }

    /// Runs the float model at `model` over the calibration tokens and keeps every layer's
    /// statistics (`tquant report`, which quantizes many variants with them); `None` without
    /// --calibrate.
    pub fn collect(&self, model: &Path, threads: usize) -> Result<Option<Arc<Calibration>>> {
        let mut float = None;
        let Some(p) = self.prepare(model, threads, &mut float)? else {
            return Ok(None);
        };
        // The model --calibrate-self generated with, or the float model loaded now.
        let float = match float {
            Some(f) => f,
            None => open_float(model, threads)?,
        };
        let capture_opts = CaptureOptions {
            window: self.calibrate_window,
            weighting: p.weighting,
        };
        let moments = capture(&float, &p.tokens, &capture_opts)
            .with_context(|| format!("running the model over {}", p.outline.source))?;
        let has = |name: &str| p.src.contains(name);
        let all = 0..p.config.num_hidden_layers;
        let cal = to_calibration(moments, &p.config, &has, p.outline, all)?;
        Ok(Some(Arc::new(cal)))
    }
}

/// The float model's run-time options: `threads` workers, exact kernels.
fn options(threads: usize) -> Options {
    Options {
        threads,
        ..Options::default()
    }
}

/// The whole float model at `model`, as f32.
fn open_float(model: &Path, threads: usize) -> Result<Model> {
    Model::open(model, options(threads))
        .with_context(|| format!("loading {} for calibration", model.display()))
}

/// Calibrating in stages keeps every calibration token's hidden state (`tokens x hidden` f32;
/// three such arrays through a MoE layer: the residual, the feed-forward input and the routed
/// experts' sum) and one stage's statistics (an f64 `d x d` second moment per input site, and
/// as much again for the GPTQ factors while the stage's matrices are quantized): refused when
/// that, for the largest stage, exceeds half the memory the system has available (the rest is
/// for the stage's weights and the work of running it).
fn refuse_if_stages_exceed_memory(config: &tquant_model::Config, tokens: usize) -> Result<()> {
    let arrays = hidden_arrays(config);
    let hidden = tokens as u64 * config.hidden_size as u64 * 4 * arrays;
    let (largest, stats) = largest_stage(config).unwrap_or((Stage::Attention(0), 0));
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if hidden + 2 * stats > available / 2 {
        bail!(
            "calibrating in stages keeps the hidden state of every calibration token: \
             {tokens} tokens x {} values x 4 bytes x {arrays} arrays = {:.1} GB, plus {:.1} GB \
             of statistics and GPTQ factors for its largest stage ({largest:?}): more than half \
             the {:.1} GB of memory available; take fewer tokens (--calibrate-bytes or a \
             smaller --calibrate-self)",
            config.hidden_size,
            hidden as f64 / 1e9,
            2.0 * stats as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    Ok(())
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

/// Generation runs the whole float model, held as f32: refused when that exceeds the memory
/// the system has available.
fn refuse_if_float_model_exceeds_memory(src: &CheckpointSource) -> Result<()> {
    let ckpt = src.checkpoint();
    let float_bytes: u64 = ckpt
        .raw_names()
        .filter_map(|name| ckpt.raw(name).ok())
        .map(|t| t.numel() as u64 * 4)
        .sum();
    if let Some(available) = available_memory() {
        if float_bytes > available {
            bail!(
                "--calibrate-self runs the whole float model, {:.1} GB as f32, more than the \
                 {:.1} GB of memory available; generate the text with `tquant run \
                 --temperature 1` from a quantized checkpoint and pass it with --calibrate",
                float_bytes as f64 / 1e9,
                available as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// Memory the system can still give (`MemAvailable` of /proc/meminfo), where known.
fn available_memory() -> Option<u64> {
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

/// [`CalibrateArgs::prepare`]'s result.
struct Prepared {
    weighting: RouterWeighting,
    src: CheckpointSource,
    config: tquant_model::Config,
    tokens: Vec<u32>,
    /// Settings, source and token count, no statistics yet.
    outline: Calibration,
}

/// [`CalibrationStages`] with the stages of a [`LayerwiseRun`], run in order.
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
        let fail = |e: tquant_model::ModelError| match e {
            tquant_model::ModelError::Convert(c) => c,
            e => ConvertError::Options(format!("calibration, stage {stage}: {e}")),
        };
        if run.next_index() != stage {
            return Err(ConvertError::Options(format!(
                "calibration stages run in order: asked for stage {stage}, next is {}",
                run.next_index()
            )));
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

impl LayerByLayer {
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

/// The report's name of a variant quantized with the calibration: `gptq:nf4`, `gptq:nf4+search`;
/// `auto+gptq`, `auto+search+gptq` for the per-matrix choice.
pub fn calibrated_variant_name(name: &str) -> String {
    if name.starts_with("auto") {
        format!("{name}+gptq")
    } else {
        format!("gptq:{name}")
    }
}
