//! Calibration-aware quantization: the input second moments `H = sum x x^T` of the linear
//! layers, and their use by GPTQ (`tquant_formats::gptq`).
//!
//! The statistics come from running the float model over calibration text (tquant-model's
//! `calibrate` module, driven by `tquant convert --calibrate`); this crate only receives them,
//! keyed by tensor name and, for fused 3-D expert tensors, expert index, in a [`Calibration`]
//! carried by `ConvertOptions::calibration`. A matrix with statistics from enough tokens is
//! quantized with GPTQ; one without (a rarely routed expert) falls back to plain rounding.
//! Either way the stored codes, scales and codebooks are the ordinary ones: the file records
//! the calibration ([`CalibrationRecord`]) but nothing a reader needs to decode.

use crate::auto::chosen_output;
use crate::quantize::{quantize_matrix, ConvertOptions, QuantizedMatrixOut};
use crate::quantized::{Layout, QuantInfo};
use crate::ConvertError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tquant_formats::gptq::{weighted_error, GptqFactor, GptqOptions, DEFAULT_DAMP};
use tquant_formats::select::argmin;
use tquant_formats::{BlockQuantizer, Codebook, FormatError, ScaleRule};

/// Below `DEFAULT_MIN_TOKENS_PER_COLUMN x cols` tokens a matrix is not calibrated.
///
/// With `T` tokens in `d` input dimensions the sample second moment has rank `min(T, d)`; GPTQ
/// trusts it to move rounding errors into directions it says the inputs rarely take. At `T < d`
/// whole directions are unseen and only the damping holds the error there; at `T = d` the
/// smallest eigenvalues are still near zero (Marchenko-Pastur: a `d / T = 1` sample covariance
/// has eigenvalues down to 0, `d / T = 1/2` down to 0.09 of the mean). On tiny-lite two tokens
/// per column did better than one or none in 8 of 9 runs on short calibration texts
/// (docs/calibration.md).
pub const DEFAULT_MIN_TOKENS_PER_COLUMN: f64 = 2.0;

/// The sum of `w x x^T` over the tokens a linear layer saw (`w` = 1, or the routing weight's
/// square for a routed expert), `dim x dim`, row-major, in f64.
pub struct Hessian {
    dim: usize,
    tokens: u64,
    sum: Vec<f64>,
    /// GPTQ's factor, computed once for the options it was asked with.
    factor: OnceLock<(GptqOptions, Result<Arc<GptqFactor>, FormatError>)>,
}

impl std::fmt::Debug for Hessian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hessian")
            .field("dim", &self.dim)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Hessian {
    fn eq(&self, other: &Self) -> bool {
        (self.dim, self.tokens, &self.sum) == (other.dim, other.tokens, &other.sum)
    }
}

impl Hessian {
    /// Statistics of `tokens` tokens; `sum` must be `dim x dim`, finite and symmetric.
    pub fn new(dim: usize, tokens: u64, sum: Vec<f64>) -> Result<Self, ConvertError> {
        let bad = |m: String| ConvertError::Options(format!("calibration statistics: {m}"));
        if dim.checked_mul(dim) != Some(sum.len()) {
            return Err(bad(format!(
                "{} values do not make a {dim} x {dim} matrix",
                sum.len()
            )));
        }
        if let Some(v) = sum.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!(
                "non-finite value {v} (did the model overflow on the calibration text?)"
            )));
        }
        for i in 0..dim {
            for j in 0..i {
                let (a, b) = (sum[i * dim + j], sum[j * dim + i]);
                if (a - b).abs() > 1e-9 * (a.abs() + b.abs()) + f64::MIN_POSITIVE {
                    return Err(bad(format!("not symmetric at ({i}, {j}): {a} vs {b}")));
                }
            }
        }
        Ok(Self {
            dim,
            tokens,
            sum,
            factor: OnceLock::new(),
        })
    }

    /// Input width (columns of the matrices it serves).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Calibration tokens that reached this layer.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// `sum w x x^T`, row-major.
    pub fn sum(&self) -> &[f64] {
        &self.sum
    }

    /// GPTQ's factor of this matrix for `opts` (computed once; the scale rule does not enter).
    pub fn factor(&self, opts: &GptqOptions) -> Result<Arc<GptqFactor>, FormatError> {
        let key = GptqOptions {
            rule: ScaleRule::Absmax,
            ..*opts
        };
        let compute = || GptqFactor::new(&self.sum, self.dim, &key).map(Arc::new);
        let (cached_for, cached) = self.factor.get_or_init(|| (key, compute()));
        if *cached_for == key {
            cached.clone()
        } else {
            compute()
        }
    }
}

/// How calibration statistics are used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationSettings {
    /// GPTQ's relative damping ([`GptqOptions::damp`]).
    pub damp: f64,
    /// GPTQ's act-order ([`GptqOptions::act_order`]).
    pub act_order: bool,
    /// A matrix is calibrated only when at least `min_tokens_per_column x cols` tokens reached
    /// it ([`DEFAULT_MIN_TOKENS_PER_COLUMN`]).
    pub min_tokens_per_column: f64,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        Self {
            damp: DEFAULT_DAMP,
            act_order: false,
            min_tokens_per_column: DEFAULT_MIN_TOKENS_PER_COLUMN,
        }
    }
}

impl CalibrationSettings {
    /// GPTQ's options with block scales chosen by `rule`.
    pub fn gptq(&self, rule: ScaleRule) -> GptqOptions {
        GptqOptions {
            damp: self.damp,
            act_order: self.act_order,
            rule,
        }
    }

    /// Tokens a matrix of `cols` columns needs to be calibrated.
    pub fn min_tokens(&self, cols: usize) -> u64 {
        (self.min_tokens_per_column * cols as f64).ceil().max(1.0) as u64
    }
}

/// What the calibration has for one matrix.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// Statistics from enough tokens: quantize with GPTQ.
    Use(&'a Hessian),
    /// Statistics from too few tokens (this many): plain rounding.
    TooFewTokens(u64),
    /// No statistics for this matrix (not a layer the runner knows).
    Missing,
}

/// The second moments of a model's linear layers, by tensor name (and expert index for fused
/// 3-D expert tensors). Several names share one [`Hessian`] when their layers share an input
/// (q and kv_a projections, gate and up).
#[derive(Default)]
pub struct Calibration {
    hessians: BTreeMap<(String, Option<usize>), Arc<Hessian>>,
    pub settings: CalibrationSettings,
    /// Where the statistics came from (file, byte range, window), for the metadata.
    pub source: String,
    /// Tokens the model was run on.
    pub tokens: u64,
}

impl std::fmt::Debug for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibration")
            .field("matrices", &self.hessians.len())
            .field("settings", &self.settings)
            .field("source", &self.source)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl PartialEq for Calibration {
    fn eq(&self, other: &Self) -> bool {
        (&self.hessians, self.settings, &self.source, self.tokens)
            == (&other.hessians, other.settings, &other.source, other.tokens)
    }
}

impl Calibration {
    pub fn new(settings: CalibrationSettings, source: String, tokens: u64) -> Self {
        Self {
            hessians: BTreeMap::new(),
            settings,
            source,
            tokens,
        }
    }

    /// Adds the statistics of tensor `name` (`expert`: its index in a fused 3-D tensor).
    pub fn insert(&mut self, name: &str, expert: Option<usize>, h: Arc<Hessian>) {
        self.hessians.insert((name.to_string(), expert), h);
    }

    /// The statistics of tensor `name` (`expert`: index in a fused 3-D tensor).
    pub fn get(&self, name: &str, expert: Option<usize>) -> Option<&Arc<Hessian>> {
        self.hessians.get(&(name.to_string(), expert))
    }

    /// Whether a matrix of `cols` columns of `name` gets GPTQ, and with what.
    pub fn lookup(&self, name: &str, expert: Option<usize>, cols: usize) -> Lookup<'_> {
        match self.get(name, expert) {
            Some(h) if h.dim != cols => Lookup::Missing,
            Some(h) if h.tokens < self.settings.min_tokens(cols) => Lookup::TooFewTokens(h.tokens),
            Some(h) => Lookup::Use(h),
            None => Lookup::Missing,
        }
    }

    /// The settings and source, for the checkpoint's `quantization_config`.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "method": "gptq",
            "source": self.source,
            "tokens": self.tokens,
            "damp": self.settings.damp,
            "act_order": self.settings.act_order,
            "min_tokens_per_column": self.settings.min_tokens_per_column,
        })
    }

    /// Keyed entries: `(tensor name, expert index)`, statistics.
    pub fn iter(&self) -> impl Iterator<Item = (&(String, Option<usize>), &Arc<Hessian>)> {
        self.hessians.iter()
    }

    pub fn len(&self) -> usize {
        self.hessians.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hessians.is_empty()
    }

    /// The metadata record of tensor `name` with `experts` matrices of `cols` columns (`shape`
    /// 3-D: one per expert), or `None` when the calibration has nothing for it.
    pub fn record(&self, name: &str, shape: &[usize]) -> Option<CalibrationRecord> {
        let cols = *shape.last()?;
        let fused = shape.len() == 3;
        let experts = if fused { shape[0] } else { 1 };
        let lookups: Vec<Lookup<'_>> = (0..experts)
            .map(|e| self.lookup(name, fused.then_some(e), cols))
            .collect();
        if lookups.iter().all(|l| matches!(l, Lookup::Missing)) {
            return None;
        }
        Some(CalibrationRecord {
            method: "gptq".into(),
            damp: self.settings.damp,
            act_order: self.settings.act_order,
            min_tokens: self.settings.min_tokens(cols),
            tokens: lookups
                .iter()
                .map(|l| match l {
                    Lookup::Use(h) => h.tokens,
                    Lookup::TooFewTokens(t) => *t,
                    Lookup::Missing => 0,
                })
                .collect(),
            calibrated: lookups
                .iter()
                .map(|l| matches!(l, Lookup::Use(_)))
                .collect(),
        })
    }
}

/// How a quantized tensor was calibrated, in its `tquant.<name>` metadata. Decoding ignores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// `gptq`.
    pub method: String,
    pub damp: f64,
    pub act_order: bool,
    /// Tokens a matrix needed to be calibrated.
    pub min_tokens: u64,
    /// Per matrix (one per expert of a fused tensor): calibration tokens that reached it.
    pub tokens: Vec<u64>,
    /// Per matrix: quantized with GPTQ (`false`: too few tokens, plain rounding).
    pub calibrated: Vec<bool>,
}

/// Statistics collected one stage at a time (a decoder layer, part of one, or a routed
/// expert), so that only one stage's are held in memory: the converter quantizes a stage's
/// matrices, drops its statistics, and collects the next.
pub trait CalibrationStages: Send + Sync {
    /// Settings, source and token count without statistics: what the metadata records.
    fn outline(&self) -> Calibration;
    fn stages(&self) -> usize;
    /// The stage whose statistics cover matrix `expert` of tensor `name` (`None`: a 2-D
    /// tensor); `None`: quantized without calibration. A fused 3-D tensor's experts are all in
    /// stages or none is.
    fn stage_of(&self, name: &str, expert: Option<usize>) -> Option<usize>;
    /// Runs the model for stage `stage` and returns its statistics.
    fn collect(&self, stage: usize) -> Result<Calibration, ConvertError>;
}

/// [`CalibrationStages`] in `ConvertOptions`.
#[derive(Clone)]
pub struct StagedCalibration(pub Arc<dyn CalibrationStages>);

impl std::fmt::Debug for StagedCalibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedCalibration")
            .field("stages", &self.0.stages())
            .finish_non_exhaustive()
    }
}

impl PartialEq for StagedCalibration {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl CalibrationRecord {
    /// The longest record a tensor of `shape` can get: header room reserved before its stage's
    /// statistics exist (the final record is never longer; the header is padded).
    fn reserve(settings: &CalibrationSettings, shape: &[usize]) -> Self {
        let experts = if shape.len() == 3 { shape[0] } else { 1 };
        let cols = shape.last().copied().unwrap_or(0);
        Self {
            method: "gptq".into(),
            damp: settings.damp,
            act_order: settings.act_order,
            min_tokens: settings.min_tokens(cols),
            tokens: vec![u64::MAX; experts],
            calibrated: vec![false; experts],
        }
    }
}

/// Refuses calibration where it cannot apply: GPTQ writes tquant's layout only.
pub fn validate(opts: &ConvertOptions) -> Result<(), ConvertError> {
    if opts.calibration.is_some() && opts.staged_calibration.is_some() {
        return Err(ConvertError::Options(
            "give the calibration either whole or in stages, not both".into(),
        ));
    }
    if opts.calibration.is_some() || opts.staged_calibration.is_some() {
        check_layout(opts.layout)?;
    }
    Ok(())
}

/// GPTQ writes tquant's layout only; callers that prepare a calibration check this first, so
/// the float model never runs for a conversion that cannot use it.
pub fn check_layout(layout: Layout) -> Result<(), ConvertError> {
    if layout != Layout::Tquant {
        return Err(ConvertError::Options(format!(
            "--calibrate needs --layout tquant ({} fixes its own quantizer)",
            layout.name()
        )));
    }
    Ok(())
}

/// Records in a planned tensor's description how it is calibrated (known before any weight is
/// read, so the header room planned for it is exact).
pub fn annotate(info: &mut QuantInfo, name: &str, opts: &ConvertOptions) {
    info.calibration = match &opts.staged_calibration {
        Some(staged) if staged_matrices(staged, name, &info.shape).any(|s| s.is_some()) => Some(
            CalibrationRecord::reserve(&staged.0.outline().settings, &info.shape),
        ),
        _ => opts
            .calibration
            .as_deref()
            .and_then(|c| c.record(name, &info.shape)),
    };
}

/// The stage of each matrix of tensor `name` of `shape` (one per expert of a fused tensor).
fn staged_matrices<'a>(
    staged: &'a StagedCalibration,
    name: &'a str,
    shape: &[usize],
) -> impl Iterator<Item = Option<usize>> + 'a {
    let experts = if shape.len() == 3 {
        Some(shape[0])
    } else {
        None
    };
    let keys: Vec<Option<usize>> = match experts {
        Some(e) => (0..e).map(Some).collect(),
        None => vec![None],
    };
    keys.into_iter().map(|e| staged.0.stage_of(name, e))
}

impl Calibration {
    /// Sets in `record` what this stage's statistics say of matrix `expert` of tensor `name`
    /// (`None`: the whole 2-D tensor), the rest of a fused tensor's record being filled by
    /// the stages of its other experts: once all have run, the record is [`Calibration::record`]
    /// of the whole statistics.
    pub fn fill_record(
        &self,
        record: &mut Option<CalibrationRecord>,
        name: &str,
        shape: &[usize],
        expert: Option<usize>,
    ) {
        let (Some(e), Some(r), Some(&cols)) = (expert, record.as_mut(), shape.last()) else {
            *record = self.record(name, shape);
            return;
        };
        let (tokens, calibrated) = match self.lookup(name, Some(e), cols) {
            Lookup::Use(h) => (h.tokens, true),
            Lookup::TooFewTokens(t) => (t, false),
            Lookup::Missing => (0, false),
        };
        if let (Some(t), Some(c)) = (r.tokens.get_mut(e), r.calibrated.get_mut(e)) {
            (*t, *c) = (tokens, calibrated);
        }
    }
}

/// Quantizes one row-major `[rows, cols]` matrix of tensor `name` (`expert`: its index in a
/// fused 3-D tensor). With statistics from enough tokens in `opts.calibration` it is GPTQ with
/// the codebook [`quantize_matrix`] would choose (its fit or nu search), or, for
/// `--format auto`, every candidate quantized with GPTQ and the one with the least output error
/// `tr((W - Q) H (W - Q)^T)` kept. Without (no calibration, a matrix it has no statistics for,
/// an expert too few tokens reached) it is exactly [`quantize_matrix`].
pub fn quantize_matrix_for(
    name: &str,
    expert: Option<usize>,
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
) -> Result<QuantizedMatrixOut, FormatError> {
    let Some(cal) = opts.calibration.as_deref() else {
        return quantize_matrix(values, rows, cols, opts);
    };
    let Lookup::Use(h) = cal.lookup(name, expert, cols) else {
        return quantize_matrix(values, rows, cols, opts);
    };
    if opts.layout != Layout::Tquant {
        return quantize_matrix(values, rows, cols, opts);
    }
    let rule = opts.scale_rule;
    let factor = h.factor(&cal.settings.gptq(rule))?;
    let q = BlockQuantizer {
        block: opts.block,
        scale_dtype: opts.scale_dtype,
    };
    let Some(spec) = &opts.auto else {
        let base = quantize_matrix(values, rows, cols, opts)?;
        let cb = Codebook::new(base.info.codebook.clone())?;
        let m = factor.quantize(&q, &cb, values, rows, cols, rule)?;
        return Ok(QuantizedMatrixOut {
            info: base.info,
            codes: m.codes,
            scales: m.scales,
        });
    };
    let outcomes = spec
        .candidates
        .par_iter()
        .map(|c| {
            let (format, fit) = c.resolve(values, rows, cols, &q, rule)?;
            let m = factor.quantize(&q, format.codebook(), values, rows, cols, rule)?;
            let deq = m.dequantize(format.codebook());
            let err = weighted_error(values, &deq, rows, cols, h.sum());
            Ok((format, fit, m, err))
        })
        .collect::<Result<Vec<_>, FormatError>>()?;
    let errors: Vec<f64> = outcomes.iter().map(|o| o.3).collect();
    let chosen = argmin(&errors).ok_or_else(|| FormatError::OutputNan {
        tensor: name.to_string(),
    })?;
    let (format, fit, m, _) = outcomes
        .into_iter()
        .nth(chosen)
        .expect("argmin is an index of the outcomes");
    Ok(chosen_output(&format, fit, m, values, cols, opts))
}
