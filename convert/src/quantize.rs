//! Quantizing one tensor in memory: Student-t fit, the codebook it selects, block quantization
//! and packing in the chosen layout. The converter calls this per matrix; `tquant report` calls
//! [`quantize_tensor`] to quantize a model without files.

use crate::dtype::count_non_finite;
use crate::error::ConvertError;
use crate::layouts;
use crate::policy::Action;
use crate::quantized::QuantizedTensor;
use crate::schema::{Layout, MatrixInfo, QuantInfo, FORMAT_VERSION};
use rayon::prelude::*;
use safetensors::Dtype;

pub use crate::fitting::{
    fit_for_codebook, fit_for_codebook_with, fit_for_profile, fit_sample, round_nu, FIT_SAMPLES,
    PROFILE_FIT_SAMPLES,
};
pub use crate::matrix::quantize_matrix;
pub use crate::options::{ConvertOptions, NuChoice};
pub use crate::schema::QuantizedMatrixOut;

/// The description of a tensor of `shape` quantized with `opts`, before its matrices exist.
pub fn plan_info(shape: &[usize], dtype: Dtype, opts: &ConvertOptions) -> QuantInfo {
    let cols = shape[shape.len() - 1];
    let experts = if shape.len() == 3 { shape[0] } else { 1 };
    let matrices = if opts.layout == Layout::Bnb {
        1
    } else {
        experts
    };
    QuantInfo {
        version: FORMAT_VERSION,
        layout: opts.layout,
        format: match (&opts.auto, opts.nu) {
            (Some(spec), _) => spec.name(),
            (None, _) if opts.learned && opts.row_tables => crate::schema::LEARNED_ROW.to_string(),
            (None, _) if opts.learned => crate::options::LEARNED.to_string(),
            (None, Some(NuChoice::Fit | NuChoice::Search)) => format!("sf{}", opts.bits()),
            _ => opts.format.name().to_string(),
        },
        bits: opts.bits(),
        shape: shape.to_vec(),
        dtype: dtype.to_string(),
        block: opts.block.len_for(cols),
        scale_dtype: opts.scale_dtype,
        scale_rule: Some(opts.scale_rule),
        calibration: None,
        matrices: vec![
            MatrixInfo {
                format: opts.format.name().to_string(),
                nu: opts.format.nu(),
                fit: None,
                fit_tensor: None,
                codebook: opts.format.codebook().values().to_vec(),
                row_tables: Vec::new(),
                global_scale: None,
            };
            matrices
        ],
        nested_absmax_block: None,
        e4m3_stored: false,
    }
}

/// Policy decision for a tensor under these options.
pub fn decide(name: &str, shape: &[usize], dtype: Dtype, opts: &ConvertOptions) -> Action {
    opts.policy.decide(name, shape, dtype)
}

/// Quantizes one tensor (2-D, or 3-D `[experts, rows, cols]` with each expert on its own
/// scales and fitted codebook), whatever the policy says: callers decide with [`decide`].
/// NaN or infinite values are refused.
pub fn quantize_tensor(
    name: &str,
    values: &[f32],
    shape: &[usize],
    dtype: Dtype,
    opts: &ConvertOptions,
) -> Result<QuantizedTensor, ConvertError> {
    let invalid = |reason: String| ConvertError::Invalid {
        tensor: name.to_string(),
        reason,
    };
    if !(2..=3).contains(&shape.len()) || shape.contains(&0) {
        return Err(invalid(format!(
            "shape {shape:?}: only 2-D matrices and 3-D expert tensors are quantized"
        )));
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(values.len()) {
        return Err(invalid(format!(
            "{} values do not fill shape {shape:?}",
            values.len()
        )));
    }
    let bad = count_non_finite(values);
    if bad > 0 {
        return Err(invalid(format!(
            "{bad} NaN or infinite values (of {}); refusing to quantize",
            values.len()
        )));
    }
    let mut info = plan_info(shape, dtype, opts);
    crate::calibration::annotate(&mut info, name, opts);
    let fmt_err = |err| ConvertError::Format {
        tensor: name.to_string(),
        source: err,
    };
    let (rows, cols) = (info.rows(), info.cols());
    if opts.layout == Layout::Bnb {
        // bitsandbytes blocks run over the flattened tensor, experts included.
        let m = quantize_matrix(values, 1, values.len(), opts).map_err(fmt_err)?;
        info.matrices = vec![m.info];
        return Ok(QuantizedTensor {
            name: name.to_string(),
            info,
            codes: m.codes,
            scales: m.scales,
        });
    }
    layouts::check_matrix(opts, (None, name), cols)?;
    if matches!(opts.layout, Layout::CompressedTensors | Layout::ModelOpt) {
        crate::compressed_tensors::check_tensor(opts, (None, name), shape)?;
    }
    let per = rows * cols;
    let outs = values
        .par_chunks(per)
        .enumerate()
        .map(|(e, m)| {
            let expert = (shape.len() == 3).then_some(e);
            crate::calibration::quantize_matrix_for(name, expert, m, rows, cols, opts)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(fmt_err)?;
    let mut codes = Vec::with_capacity(info.code_bytes());
    let mut scales = Vec::with_capacity(info.scale_bytes());
    info.matrices = outs
        .into_iter()
        .map(|m| {
            codes.extend_from_slice(&m.codes);
            match (info.layout, m.info.global_scale) {
                // Held as readers of such files see it: f32 `E4M3 / tensor scale`.
                (Layout::CompressedTensors, Some(g)) => scales.extend(
                    tquant_formats::nvfp4::nvfp4_step_scales(&m.scales, g)
                        .iter()
                        .flat_map(|s| s.to_le_bytes()),
                ),
                (Layout::ModelOpt, Some(g)) => scales.extend(
                    tquant_formats::nvfp4::modelopt_step_scales(&m.scales, g)
                        .iter()
                        .flat_map(|s| s.to_le_bytes()),
                ),
                _ => scales.extend_from_slice(&m.scales),
            }
            m.info
        })
        .collect();
    if matches!(info.layout, Layout::CompressedTensors | Layout::ModelOpt)
        && info.scale_dtype == tquant_formats::ScaleDtype::E4m3
    {
        info.scale_dtype = tquant_formats::ScaleDtype::F32;
        info.e4m3_stored = true;
    }
    Ok(QuantizedTensor {
        name: name.to_string(),
        info,
        codes,
        scales,
    })
}
