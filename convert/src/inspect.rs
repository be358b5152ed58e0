//! `tquant inspect` and `tquant verify`: what a checkpoint holds, and how far its quantized
//! tensors are from the original ones.

use crate::checkpoint::{Checkpoint, Weight};
use crate::error::ConvertError;
use crate::stats::{error_stats, ErrorStats};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{json, Value};

/// One logical tensor of a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct InspectRow {
    /// Logical name (a quantized tensor under its original name).
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// The stored dtype of a kept tensor; the original dtype of a quantized one.
    pub dtype: String,
    /// `none` when kept; the codebook's format (`sf4:nu=4.237`, or per expert when they differ).
    pub format: String,
    /// Layout of a quantized tensor (`tquant`, `bnb`, `mxfp4`).
    pub layout: Option<String>,
    /// Elements per block of a quantized tensor.
    pub block: Option<usize>,
    /// Scale dtype of a quantized tensor.
    pub scale_dtype: Option<String>,
    /// `absmax` or `search` when the file records how its scales were chosen.
    pub scale_rule: Option<String>,
    /// Stored bits per weight, codes and scales (a kept tensor: its dtype's bits).
    pub bits_per_weight: f64,
    /// nu of the Student Float codebook: a number, one per expert for 3-D tensors, or null.
    pub nu: Value,
    /// nu of the whole-tensor fit (the paper's profile), same shape as `nu`.
    pub nu_tensor: Value,
    /// Bytes stored for it, all parts.
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
/// Every logical tensor of a checkpoint and the totals.
pub struct InspectReport {
    /// One row per logical tensor, sorted by name.
    pub tensors: Vec<InspectRow>,
    /// Bytes of every stored tensor.
    pub total_bytes: u64,
    /// `total_bytes * 8 / params`: every stored byte (a q8_0 tensor's at 8.5 bits per weight).
    pub bits_per_weight: f64,
    /// Parameters of every tensor.
    pub params: u64,
    /// Parameters of the quantized tensors (q8_0 ones included).
    pub params_quantized: u64,
    /// Quantized tensors (q8_0 ones included).
    pub quantized: usize,
    /// Of those, the tensors stored as q8_0.
    pub q8_0: usize,
    /// Tensors kept unquantized.
    pub kept: usize,
}

fn per_matrix(values: Vec<Option<f64>>, three_d: bool) -> Value {
    if three_d {
        json!(values)
    } else {
        json!(values.first().copied().flatten())
    }
}

/// The distinct format families of experts that `--format auto` quantized differently, without
/// their parameters: `int4_full|nf4|sf4`.
fn mixed_formats(formats: &[&str]) -> String {
    let families: std::collections::BTreeSet<&str> = formats
        .iter()
        .map(|f| f.split(':').next().unwrap_or(f))
        .collect();
    families.into_iter().collect::<Vec<_>>().join("|")
}

/// Describes every logical tensor from headers and metadata (no weight is read).
pub fn inspect(ckpt: &Checkpoint) -> Result<InspectReport, ConvertError> {
    let mut tensors = Vec::new();
    let total_bytes: u64 = ckpt
        .shards()
        .iter()
        .flat_map(|s| s.header.entries.iter())
        .map(|e| e.len as u64)
        .sum();
    let (mut params, mut params_quantized) = (0u64, 0u64);
    for name in ckpt.names() {
        // Headers and descriptions only: no tensor data is read.
        let row = match ckpt.quant_info(name) {
            None => {
                let t = ckpt.raw(name)?;
                InspectRow {
                    name: name.to_string(),
                    shape: t.shape.to_vec(),
                    dtype: t.dtype.to_string(),
                    format: "none".into(),
                    layout: None,
                    block: None,
                    scale_dtype: None,
                    scale_rule: None,
                    bits_per_weight: t.dtype.bitsize() as f64,
                    nu: Value::Null,
                    nu_tensor: Value::Null,
                    stored_bytes: t.bytes.len() as u64,
                }
            }
            Some(i) => {
                params_quantized += i.numel() as u64;
                let mut formats: Vec<&str> = i.matrices.iter().map(|m| m.format.as_str()).collect();
                formats.dedup();
                let three_d = i.shape.len() == 3 && i.matrices.len() > 1;
                InspectRow {
                    name: name.to_string(),
                    shape: i.shape.clone(),
                    dtype: i.dtype.clone(),
                    format: if formats.len() == 1 {
                        formats[0].to_string()
                    } else if crate::options::is_auto(&i.format) {
                        mixed_formats(&formats)
                    } else {
                        i.format.clone()
                    },
                    layout: Some(i.layout.name().into()),
                    block: Some(i.block),
                    // NVFP4 of another tool is read as f32 scales but stored as E4M3.
                    scale_dtype: Some(
                        if i.e4m3_stored {
                            "e4m3"
                        } else {
                            i.scale_dtype.name()
                        }
                        .into(),
                    ),
                    scale_rule: i.scale_rule.map(|r| r.name().into()),
                    bits_per_weight: i.bits_per_weight(),
                    nu: per_matrix(i.matrices.iter().map(|m| m.nu).collect(), three_d),
                    nu_tensor: per_matrix(
                        i.matrices
                            .iter()
                            .map(|m| m.fit_tensor.map(|f| f.nu))
                            .collect(),
                        three_d,
                    ),
                    stored_bytes: (i.code_bytes() + i.scale_bytes()) as u64,
                }
            }
        };
        params += row.shape.iter().product::<usize>() as u64;
        tensors.push(row);
    }
    let quantized = tensors.iter().filter(|t| t.format != "none").count();
    let q8_0 = tensors
        .iter()
        .filter(|t| t.format == tquant_formats::q8_0::Q8_NAME)
        .count();
    Ok(InspectReport {
        q8_0,
        kept: tensors.len() - quantized,
        quantized,
        bits_per_weight: total_bytes as f64 * 8.0 / params.max(1) as f64,
        tensors,
        total_bytes,
        params,
        params_quantized,
    })
}

/// One quantized tensor compared with its original.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    /// The tensor.
    pub name: String,
    /// Its format (per expert when they differ).
    pub format: String,
    /// Normalised mean squared error against the original.
    pub nmse: f64,
    /// Signal to quantization noise ratio, in dB.
    pub sqnr_db: f64,
    /// Largest absolute error of an element.
    pub max_abs_err: f64,
    /// Cosine similarity of the flattened tensors.
    pub cosine: f64,
    /// Stored bits per weight.
    pub bits_per_weight: f64,
}

#[derive(Debug, Clone, Serialize)]
/// A quantized checkpoint compared with its original.
pub struct VerifyReport {
    /// One row per quantized tensor.
    pub tensors: Vec<VerifyRow>,
    /// Over all quantized weights together: `sum((q-w)^2) / sum(w^2)`.
    pub nmse: f64,
    /// Kept tensors whose bytes equal the original's (an FP8 original's: the BF16 rounding of
    /// its dequantized values, which is how the converter keeps it).
    pub kept_identical: usize,
    /// Of those, the FP8 originals kept as BF16.
    pub kept_dequantized: usize,
    /// Kept tensors that differ from the original (should be none).
    pub kept_different: Vec<String>,
    /// Original tensors absent from the quantized checkpoint (skipped buffers).
    pub missing: Vec<String>,
}

/// Dequantizes every quantized tensor of `quantized` and compares it with `original`; checks
/// that kept tensors are byte-identical.
pub fn verify(original: &Checkpoint, quantized: &Checkpoint) -> Result<VerifyReport, ConvertError> {
    let names: Vec<&str> = quantized.names().collect();
    let rows = names
        .par_iter()
        .map(
            |&name| -> Result<Option<(VerifyRow, f64, f64)>, ConvertError> {
                let Weight::Quantized(q) = quantized.get(name)? else {
                    return Ok(None);
                };
                let w = original.get(name)?;
                if w.shape() != q.shape() {
                    return Err(ConvertError::Invalid {
                        tensor: name.to_string(),
                        reason: format!(
                            "original shape {:?} differs from quantized {:?}",
                            w.shape(),
                            q.shape()
                        ),
                    });
                }
                let w = w.to_f32()?;
                let d = Weight::Quantized(q).to_f32()?;
                let ErrorStats {
                    nmse,
                    sqnr_db,
                    max_abs_err,
                    cosine,
                } = error_stats(&w, &d);
                let energy: f64 = w.iter().map(|&v| v as f64 * v as f64).sum();
                let mut formats: Vec<&str> =
                    q.info.matrices.iter().map(|m| m.format.as_str()).collect();
                formats.dedup();
                let row = VerifyRow {
                    name: name.to_string(),
                    format: if formats.len() == 1 {
                        formats[0].to_string()
                    } else {
                        q.info.format.clone()
                    },
                    nmse,
                    sqnr_db,
                    max_abs_err,
                    cosine,
                    bits_per_weight: q.info.bits_per_weight(),
                };
                Ok(Some((row, nmse * energy, energy)))
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    let (mut err, mut energy) = (0.0, 0.0);
    let tensors = rows
        .into_iter()
        .flatten()
        .map(|(r, e, w)| {
            err += e;
            energy += w;
            r
        })
        .collect();
    let (mut kept_identical, mut kept_different, mut missing) = (0, Vec::new(), Vec::new());
    let mut kept_dequantized = 0;
    for name in original.names() {
        match quantized.get(name) {
            Ok(Weight::Dense(k)) => {
                let o = original.raw(name)?;
                if o.scales.is_some() && k.dtype == safetensors::Dtype::BF16 && o.shape == k.shape {
                    let bf16: Vec<u8> = o
                        .to_f32()?
                        .into_iter()
                        .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
                        .collect();
                    if bf16 == k.bytes {
                        kept_identical += 1;
                        kept_dequantized += 1;
                    } else {
                        kept_different.push(name.to_string());
                    }
                } else if o.bytes == k.bytes && o.dtype == k.dtype && o.shape == k.shape {
                    kept_identical += 1;
                } else {
                    kept_different.push(name.to_string());
                }
            }
            Ok(Weight::Quantized(_)) => {}
            Err(ConvertError::NotFound { .. }) => missing.push(name.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(VerifyReport {
        tensors,
        nmse: if energy > 0.0 { err / energy } else { 0.0 },
        kept_identical,
        kept_dequantized,
        kept_different,
        missing,
    })
}
