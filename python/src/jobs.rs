//! Whole-checkpoint jobs: `convert` (the streaming converter, calibrated with GPTQ when asked)
//! and `report` (the accuracy-vs-area rows). Both return the library's JSON, which the Python
//! part turns into dicts; the GIL is released while they run.

use crate::err;
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use tquant_convert::calibration::CalibrationSettings;
use tquant_convert::convert::NoProgress;
use tquant_convert::{Layout, Overrides, Policy, Recipe};
use tquant_formats::{BlockSize, ScaleDtype};
use tquant_report::measure::parse_variants;
use tquant_report::pipeline::{layer_by_layer, CalibrationOptions, CalibrationSource};
use tquant_report::{EvalText, Report, ReportError, Setting};

/// Calibration settings as `tquant convert`'s `--calibrate*` options give them.
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Calibrate {
    calibrate: Option<PathBuf>,
    calibrate_self: Option<usize>,
    calibrate_seed: u64,
    calibrate_ids: bool,
    calibrate_offset: usize,
    calibrate_bytes: Option<usize>,
    calibrate_window: usize,
    damp: Option<f64>,
    act_order: bool,
    router_weighting: String,
    min_tokens_per_column: Option<f64>,
}

impl Calibrate {
    fn options(&self) -> Result<Option<CalibrationOptions>, String> {
        if self.calibrate.is_some() && self.calibrate_self.is_some() {
            return Err("calibrate and calibrate_self exclude each other".into());
        }
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
        let defaults = CalibrationSettings::default();
        let settings = CalibrationSettings {
            damp: self.damp.unwrap_or(defaults.damp),
            act_order: self.act_order,
            min_tokens_per_column: (self.min_tokens_per_column)
                .unwrap_or(defaults.min_tokens_per_column),
        };
        let weighting = self.router_weighting.parse()?;
        let window = self.calibrate_window;
        let c = CalibrationOptions::with_settings(source, window, settings, weighting).map_err(
            |e| match e {
                ReportError::Convert(e) => e.with_flags(&keyword).to_string(),
                e => e.to_string(),
            },
        )?;
        Ok(Some(c))
    }
}

/// The keyword argument that sets a converter setting.
fn keyword(s: tquant_convert::Setting) -> &'static str {
    use tquant_convert::Setting;
    match s {
        Setting::CalibrationWindow => "calibrate_window",
        Setting::MinTokensPerColumn => "min_tokens_per_column",
        s => s.name(),
    }
}

/// What `convert` takes besides the paths and the calibration, as the CLI's options.
#[derive(Debug, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Options {
    format: Option<String>,
    nu: Option<String>,
    block: Option<String>,
    scale_dtype: Option<String>,
    scale_rule: Option<String>,
    layout: String,
    include: Vec<String>,
    exclude: Vec<String>,
    drop: Vec<String>,
    threads: Option<usize>,
    force: bool,
}

/// An optional setting parsed, its error as text.
fn parsed<T: std::str::FromStr>(v: &Option<String>) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    v.as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: T::Err| e.to_string())
}

fn run_convert(src: &Path, dst: &Path, o: &Options, cal: &Calibrate) -> Result<String, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let layout: Layout = o.layout.parse().map_err(|e| s(&e))?;
    let overrides = Overrides {
        nu: parsed(&o.nu)?,
        block: parsed(&o.block)?,
        scale_dtype: parsed(&o.scale_dtype)?,
        scale_rule: parsed(&o.scale_rule)?,
    };
    let (recipe, builder) =
        Recipe::builder_with(o.format.as_deref(), layout, &overrides).map_err(|e| s(&e))?;
    let builder = builder.policy(Policy {
        include: o.include.clone(),
        exclude: o.exclude.clone(),
        drop: o.drop.clone(),
    });
    let mut opts = builder.build().map_err(|e| s(&e))?;
    if recipe.gptq && cal.options()?.is_none() {
        return Err(format!(
            "recipe '{recipe}' quantizes with GPTQ and needs calibration (calibrate=... or \
             calibrate_self=...)"
        ));
    }
    let threads = o.threads.unwrap_or(0);
    if let Some(c) = cal.options()? {
        let run = layer_by_layer(src, dst, &opts, &c, threads, o.force).map_err(|e| s(&e))?;
        opts.staged_calibration = Some(run.staged());
    }
    let summary = tquant_report::pipeline::convert(src, dst, &opts, threads, o.force, &NoProgress)
        .map_err(|e| s(&e))?;
    serde_json::to_string(&summary).map_err(|e| s(&e))
}

/// Converts the checkpoint `src` into a quantized one at `dst`; the summary as JSON. See
/// `tquant.convert`.
#[pyfunction]
pub(crate) fn convert(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    options: Options,
    calibration: Calibrate,
) -> PyResult<String> {
    py.detach(|| run_convert(&src, &dst, &options, &calibration))
        .map_err(err)
}

/// Measures `model` with each recipe (weight errors; bits per byte on `text` when given); the
/// report as JSON (`tquant report`'s report.json). See `tquant.report`.
// One argument per keyword of the Python function.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (model, text, recipes, block, scale_dtype, window, max_bytes))]
pub(crate) fn report(
    py: Python<'_>,
    model: PathBuf,
    text: Option<PathBuf>,
    recipes: String,
    block: &str,
    scale_dtype: &str,
    window: usize,
    max_bytes: usize,
) -> PyResult<String> {
    let block: BlockSize = block.parse().map_err(err)?;
    let scale_dtype: ScaleDtype = scale_dtype.parse().map_err(err)?;
    py.detach(|| {
        let s = |e: &dyn std::fmt::Display| e.to_string();
        let variants =
            parse_variants(&recipes, block, scale_dtype).map_err(|e| format!("recipes: {e}"))?;
        let eval = match &text {
            Some(path) => Some(EvalText::read(&model, path, window, max_bytes).map_err(|e| s(&e))?),
            None => None,
        };
        let setting = Setting { block, scale_dtype };
        let r = Report::measure(&model, &variants, &setting, eval.as_ref(), None, |_| {})
            .map_err(|e| s(&e))?;
        r.json().map_err(|e| s(&e))
    })
    .map_err(err)
}
