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
use crate::matrix::{quantize_matrix, quantize_matrix_weighted};
pub use crate::options::check_calibration_layout as check_layout;
use crate::options::ConvertOptions;
pub use crate::schema::CalibrationRecord;
use crate::schema::{Layout, QuantInfo, QuantizedMatrixOut};
pub use crate::statistics::{
    Calibration, CalibrationSettings, CalibrationStages, Hessian, Lookup, StagedCalibration,
    DEFAULT_MIN_TOKENS_PER_COLUMN,
};
use rayon::prelude::*;
use tquant_formats::gptq::weighted_error;
use tquant_formats::select::argmin;
use tquant_formats::{BlockQuantizer, Codebook, FormatError};

/// Records in a planned tensor's description how it is calibrated (known before any weight is
/// read, so the header room planned for it is exact).
pub(crate) fn annotate(info: &mut QuantInfo, name: &str, opts: &ConvertOptions) {
    info.calibration = match &opts.staged_calibration {
        Some(staged) if staged_matrices(staged, name, &info.shape).any(|s| s.is_some()) => {
            Some(staged.0.outline().settings.reserve_record(&info.shape))
        }
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
        // A learned table weighs each column's values by how much its input moves the output.
        let diag: Option<Vec<f64>> = opts
            .learned
            .then(|| (0..cols).map(|c| h.sum()[c * cols + c]).collect());
        let base = quantize_matrix_weighted(values, rows, cols, opts, diag.as_deref())?;
        if opts.row_tables {
            // GPTQ's rows are independent given H: each row with its own table.
            let len = base.info.row_tables.len() / rows.max(1);
            let parts = (0..rows)
                .into_par_iter()
                .map(|r| {
                    let cb = Codebook::new(base.info.row_tables[r * len..(r + 1) * len].to_vec())?;
                    let row = &values[r * cols..(r + 1) * cols];
                    let m = factor.quantize(&q, &cb, row, 1, cols, rule)?;
                    Ok((m.codes, m.scales))
                })
                .collect::<Result<Vec<_>, FormatError>>()?;
            let (codes, scales): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
            return Ok(QuantizedMatrixOut {
                info: base.info,
                codes: codes.concat(),
                scales: scales.concat(),
            });
        }
        let cb = Codebook::new(base.info.codebook.clone())?;
        let screen = tquant_kernels::ScaleScreen::detect();
        let m = factor.quantize_with_screen(&q, &cb, values, rows, cols, rule, &screen)?;
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
            let (cb, screen) = (format.codebook(), tquant_kernels::ScaleScreen::detect());
            let m = factor.quantize_with_screen(&q, cb, values, rows, cols, rule, &screen)?;
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
