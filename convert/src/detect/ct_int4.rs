//! compressed-tensors `pack-quantized` INT4 (its `W4A16` preset: symmetric, `group` strategy),
//! as compressed-tensors 0.20 writes it: `<m>.weight_packed` I32 `[rows, cols/8]` (element `i`
//! in bits `4i..4i+4` of the little-endian words, stored as `q + 8`, so the bytes are tquant's
//! code layout with code `c` meaning `c - 8`), `<m>.weight_scale` `[rows, cols/group]` in a
//! float dtype, and `<m>.weight_shape` I64 `[2]`, the unpacked `[rows, cols]`.

use super::{check_shape, config_dtype, expect_part, path_of, QuantSlot};
use crate::error::ConvertError;
use crate::schema::{Layout, MatrixInfo, QuantInfo, FORMAT_VERSION};
use crate::shards::ShardSet;
use safetensors::Dtype;
use serde_json::Value;
use tquant_formats::ScaleDtype;

/// The config.json format name.
pub(crate) const PACK_QUANTIZED: &str = "pack-quantized";

/// The weights' group size, when config.json's one config group is symmetric 4-bit int with
/// the `group` strategy; otherwise why it is not read.
fn group_size(ckpt: &ShardSet) -> Result<usize, String> {
    let groups = ckpt
        .config()
        .and_then(|c| c.pointer("/quantization_config/config_groups"))
        .and_then(Value::as_object)
        .ok_or("config.json has no quantization_config.config_groups")?;
    let mut weights = groups.values().filter_map(|g| g.get("weights"));
    let (Some(w), None) = (weights.next(), weights.next()) else {
        return Err("pack-quantized is read with exactly one config group of weights".into());
    };
    let field = |k: &str| w.get(k).cloned().unwrap_or(Value::Null);
    let wanted = [
        ("num_bits", Value::from(4)),
        ("type", Value::from("int")),
        ("symmetric", Value::from(true)),
        ("strategy", Value::from("group")),
    ];
    for (k, v) in wanted {
        if field(k) != v {
            return Err(format!(
                "pack-quantized weights with {k} = {} are not read (4-bit symmetric int, \
                 group strategy)",
                field(k)
            ));
        }
    }
    match field("group_size").as_u64() {
        Some(g) if g > 0 => Ok(g as usize),
        _ => Err(format!(
            "pack-quantized group_size {} is not a positive integer",
            field("group_size")
        )),
    }
}

/// A `pack-quantized` INT4 weight `base` (`X.weight`) from `base_packed`, `base_scale` and
/// `base_shape`.
pub(super) fn ct_int4_slot(
    ckpt: &ShardSet,
    base: &str,
    packed: &str,
) -> Result<QuantSlot, ConvertError> {
    let path = path_of(ckpt, packed);
    let bad = |reason: String| ConvertError::tensor(&path, base, reason);
    let group = group_size(ckpt).map_err(bad)?;
    let (p, _) = ckpt.entry(packed)?;
    if p.dtype != Dtype::I32 || p.shape.len() != 2 {
        return Err(bad(format!(
            "pack-quantized weight_packed must be I32 [rows, cols/8], found {} {:?}",
            p.dtype, p.shape
        )));
    }
    let shape_name = format!("{base}_shape");
    expect_part(ckpt, (&path, base), &shape_name, Dtype::I64, &[2])?;
    let (_, bytes) = ckpt.entry(&shape_name)?;
    let dims: Vec<i64> = bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let (rows, cols) = match dims[..] {
        [r, c] if r > 0 && c > 0 => (r as usize, c as usize),
        _ => {
            return Err(bad(format!(
                "weight_shape {dims:?} is not a positive [rows, cols]"
            )))
        }
    };
    if rows != p.shape[0] || cols.div_ceil(8) != p.shape[1] || cols % 8 != 0 {
        return Err(bad(format!(
            "weight_shape [{rows}, {cols}] does not match weight_packed {:?} (8 codes per word)",
            p.shape
        )));
    }
    check_shape(&[rows, cols]).map_err(bad)?;
    if cols % group != 0 {
        return Err(bad(format!(
            "pack-quantized needs rows of whole groups of {group}; weight_shape holds rows of {cols}"
        )));
    }
    let scales = format!("{base}_scale");
    let Some((_, s)) = ckpt.locate(&scales) else {
        return Err(ConvertError::MissingPart {
            path: path.clone(),
            tensor: base.to_string(),
            part: scales,
        });
    };
    let (scale_dtype, stored) = match s.dtype {
        Dtype::F32 => (ScaleDtype::F32, Dtype::F32),
        Dtype::BF16 => (ScaleDtype::Bf16, Dtype::BF16),
        Dtype::F16 => (ScaleDtype::F16, Dtype::F16),
        other => {
            return Err(bad(format!(
                "pack-quantized weight_scale must be F32, BF16 or F16, found {other}"
            )))
        }
    };
    expect_part(ckpt, (&path, base), &scales, stored, &[rows, cols / group])?;
    let info = QuantInfo {
        version: FORMAT_VERSION,
        layout: Layout::CompressedTensors,
        format: "int4_full".into(),
        bits: 4,
        shape: vec![rows, cols],
        dtype: config_dtype(ckpt),
        block: group,
        scale_dtype,
        scale_rule: None,
        calibration: None,
        nested_absmax_block: None,
        e4m3_stored: false,
        matrices: vec![MatrixInfo {
            format: "int4_full".into(),
            nu: None,
            fit: None,
            fit_tensor: None,
            codebook: crate::compressed_tensors::int4_offset_codebook(),
            row_tables: Vec::new(),
            global_scale: None,
        }],
    };
    Ok(QuantSlot {
        info,
        codes: packed.to_string(),
        scales: scales.clone(),
        parts: vec![packed.to_string(), scales, shape_name],
        nested: None,
        e4m3: None,
    })
}
