//! Calibration statistics as the converter receives them: the input second moments
//! `H = sum x x^T` of the linear layers ([`Hessian`]), keyed by tensor name and expert in a
//! [`Calibration`], whole or collected stage by stage ([`CalibrationStages`]), and the record a
//! tensor's metadata keeps of them ([`CalibrationRecord`]). Data only: their use by GPTQ is
//! the `calibration` module.

use crate::error::{ConvertError, Setting};
use crate::schema::CalibrationRecord;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tquant_formats::gptq::{GptqFactor, GptqOptions, DEFAULT_DAMP};
use tquant_formats::{FormatError, ScaleRule};

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
        if dim.checked_mul(dim) != Some(sum.len()) {
            return Err(ConvertError::StatisticsSize {
                values: sum.len(),
                dim,
            });
        }
        if let Some(&value) = sum.iter().find(|v| !v.is_finite()) {
            return Err(ConvertError::StatisticsNonFinite { value });
        }
        for i in 0..dim {
            for j in 0..i {
                let (a, b) = (sum[i * dim + j], sum[j * dim + i]);
                if (a - b).abs() > 1e-9 * (a.abs() + b.abs()) + f64::MIN_POSITIVE {
                    return Err(ConvertError::StatisticsAsymmetric {
                        row: i,
                        col: j,
                        value: a,
                        mirror: b,
                    });
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

    /// Refuses a damping or a token threshold that is not a number >= 0.
    pub fn validate(&self) -> Result<(), ConvertError> {
        let checks = [
            (Setting::Damp, self.damp),
            (Setting::MinTokensPerColumn, self.min_tokens_per_column),
        ];
        match checks
            .into_iter()
            .find(|(_, v)| !(v.is_finite() && *v >= 0.0))
        {
            Some((setting, value)) => Err(ConvertError::NegativeSetting { setting, value }),
            None => Ok(()),
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
    /// How the statistics are used.
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
    /// Empty statistics with their settings, source and token count.
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

    /// Matrices with statistics.
    pub fn len(&self) -> usize {
        self.hessians.len()
    }

    /// True when no matrix has statistics.
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

/// Statistics collected one stage at a time (a decoder layer, part of one, or a routed
/// expert), so that only one stage's are held in memory: the converter quantizes a stage's
/// matrices, drops its statistics, and collects the next.
pub trait CalibrationStages: Send + Sync {
    /// Settings, source and token count without statistics: what the metadata records.
    fn outline(&self) -> Calibration;
    /// Number of stages.
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

impl CalibrationSettings {
    /// The longest record a tensor of `shape` can get: header room reserved before its stage's
    /// statistics exist (the final record is never longer; the header is padded).
    pub(crate) fn reserve_record(&self, shape: &[usize]) -> CalibrationRecord {
        let experts = if shape.len() == 3 { shape[0] } else { 1 };
        let cols = shape.last().copied().unwrap_or(0);
        CalibrationRecord {
            method: "gptq".into(),
            damp: self.damp,
            act_order: self.act_order,
            min_tokens: self.min_tokens(cols),
            tokens: vec![u64::MAX; experts],
            calibrated: vec![false; experts],
        }
    }
}
