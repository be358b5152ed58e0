//! FP8 checkpoints (DeepSeek-V3/R1, Kimi-K2): a 2-D `F8_E4M3` weight `W` stored with an F32
//! tensor `W_scale_inv` of one scale per 128x128 block, shape [ceil(M/128), ceil(N/128)].
//! Despite the name the scale multiplies: `w[r, c] = fp8(q[r, c]) * s[r / 128, c / 128]`
//! (DeepSeek's `weight_dequant`). Such a weight reads as f32 like any float tensor; its scale
//! tensor is part of it, not a tensor of its own.

pub use crate::dtype::is_fp8;
use crate::error::ConvertError;
use crate::header::dtype_name;
use crate::shards::ShardSet;
use half::f16;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
/// The E4M3 decoder the block scales of NVFP4 use too.
pub use tquant_formats::e4m3_to_f32;

/// Suffix of a weight's block-scale tensor.
pub const SCALE_SUFFIX: &str = "_scale_inv";
/// Rows and columns of one scale block when `quantization_config` does not say.
pub const DEFAULT_BLOCK: [usize; 2] = [128, 128];

/// `float8_e5m2`: the upper byte of an IEEE half (5 exponent bits, bias 15, infinities and NaN).
pub fn e5m2_to_f32(code: u8) -> f32 {
    f16::from_bits(u16::from(code) << 8).to_f32()
}

/// The 256 values of an FP8 dtype in code order.
pub fn table(dtype: Dtype) -> Option<&'static [f32; 256]> {
    static E4M3: OnceLock<[f32; 256]> = OnceLock::new();
    static E5M2: OnceLock<[f32; 256]> = OnceLock::new();
    let (cell, decode): (_, fn(u8) -> f32) = match dtype {
        Dtype::F8_E4M3 => (&E4M3, e4m3_to_f32),
        Dtype::F8_E5M2 => (&E5M2, e5m2_to_f32),
        _ => return None,
    };
    Some(cell.get_or_init(|| std::array::from_fn(|i| decode(i as u8))))
}

/// The block scales of one FP8 weight, borrowed from the checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct BlockScales<'a> {
    /// The scale tensor's name and file.
    pub name: &'a str,
    /// The scale tensor's file.
    pub path: &'a Path,
    /// The weight's file (named by errors about its codes).
    pub weight_path: &'a Path,
    /// Rows and columns of one block.
    pub block: [usize; 2],
    /// Little-endian F32, `[ceil(rows / block[0]), ceil(cols / block[1])]`.
    pub bytes: &'a [u8],
}

impl BlockScales<'_> {
    /// The scales as f32, each checked finite and not negative.
    fn values(&self) -> Result<Vec<f32>, ConvertError> {
        let s: Vec<f32> = self
            .bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((i, v)) = s
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || v.is_sign_negative() && **v != 0.0)
        {
            return Err(ConvertError::tensor(
                self.path,
                self.name,
                format!("block scale {i} is {v}; FP8 block scales must be finite and not negative"),
            ));
        }
        Ok(s)
    }
}

/// Dequantizes a 2-D FP8 weight `[rows, cols]` (`codes` row-major) with its block scales.
/// A NaN code (or an E5M2 infinity) is an error naming the weight and its first position.
pub fn dequantize(
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    codes: &[u8],
    scales: &BlockScales<'_>,
) -> Result<Vec<f32>, ConvertError> {
    let bad = |reason: String| ConvertError::tensor(scales.weight_path, name, reason);
    let table = table(dtype).ok_or_else(|| bad(format!("{dtype} is not an FP8 dtype")))?;
    let &[rows, cols] = shape else {
        return Err(bad(format!("FP8 weight of shape {shape:?} is not 2-D")));
    };
    if codes.len() != rows * cols {
        return Err(bad(format!(
            "{} bytes of codes for shape {shape:?}",
            codes.len()
        )));
    }
    if let Some(first) = codes.iter().position(|&q| !table[q as usize].is_finite()) {
        let count = codes
            .iter()
            .filter(|&&q| !table[q as usize].is_finite())
            .count();
        return Err(bad(format!(
            "{count} NaN or infinite FP8 codes (of {}), the first 0x{:02X} at [{}, {}]",
            codes.len(),
            codes[first],
            first / cols,
            first % cols
        )));
    }
    let s = scales.values()?;
    let [br, bc] = scales.block;
    let scale_cols = cols.div_ceil(bc.max(1));
    if br == 0 || bc == 0 || s.len() != rows.div_ceil(br.max(1)) * scale_cols {
        return Err(ConvertError::tensor(
            scales.path,
            scales.name,
            format!(
                "{} block scales for a {rows}x{cols} weight in {br}x{bc} blocks",
                s.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(rows * cols);
    for (r, row) in codes.chunks_exact(cols.max(1)).take(rows).enumerate() {
        let srow = &s[(r / br) * scale_cols..(r / br + 1) * scale_cols];
        out.extend(
            row.iter()
                .enumerate()
                .map(|(c, &q)| table[q as usize] * srow[c / bc]),
        );
    }
    Ok(out)
}

/// An FP8 weight found at open: where its scales are and their block size.
#[derive(Debug, Clone)]
pub(crate) struct Fp8Slot {
    pub scales: String,
    pub block: [usize; 2],
}

/// The block size of `quantization_config.weight_block_size`, or 128x128 without one.
fn block_size(config: Option<&Value>, path: &Path) -> Result<[usize; 2], ConvertError> {
    let Some(v) = config
        .and_then(|c| c.get("quantization_config"))
        .and_then(|q| q.get("weight_block_size"))
    else {
        return Ok(DEFAULT_BLOCK);
    };
    let dims: Option<Vec<usize>> = v.as_array().map(|a| {
        a.iter()
            .filter_map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .filter(|&d| d > 0)
            .collect()
    });
    match dims.as_deref() {
        Some(&[r, c]) if v.as_array().is_some_and(|a| a.len() == 2) => Ok([r, c]),
        _ => Err(ConvertError::header(
            path,
            format!("quantization_config.weight_block_size {v} is not two positive integers"),
        )),
    }
}

/// Pairs every FP8 weight of an opened checkpoint with its scale tensor, checking dtypes and
/// shapes from the headers (the scales' values are checked when the weight is read).
pub(crate) fn pair_scales(
    ckpt: &ShardSet,
    config_path: &Path,
    quantized_parts: &std::collections::HashSet<&str>,
) -> Result<BTreeMap<String, Fp8Slot>, ConvertError> {
    let mut out = BTreeMap::new();
    let mut block = None;
    for shard in ckpt.shards() {
        for entry in &shard.header.entries {
            let name = &entry.name;
            if quantized_parts.contains(name.as_str()) {
                continue;
            }
            let bad = |reason: String| ConvertError::tensor(&shard.path, name, reason);
            if let Some(base) = name.strip_suffix(SCALE_SUFFIX) {
                if let Some((_, w)) = ckpt.locate(base).filter(|(_, w)| !is_fp8(w.dtype)) {
                    return Err(bad(format!(
                        "a block-scale tensor for '{base}', which is {} rather than FP8",
                        dtype_name(w.dtype)
                    )));
                }
            }
            if !is_fp8(entry.dtype) {
                continue;
            }
            let [rows, cols] = entry.shape[..] else {
                return Err(bad(format!(
                    "{} tensor of shape {:?}: FP8 weights are read only as 2-D matrices with block scales",
                    dtype_name(entry.dtype),
                    entry.shape
                )));
            };
            let block = match block {
                Some(b) => b,
                None => *block.insert(block_size(ckpt.config(), config_path)?),
            };
            let scales = format!("{name}{SCALE_SUFFIX}");
            let Some((sshard, s)) = ckpt.locate(&scales) else {
                return Err(bad(format!(
                    "{} weight without its block scales '{scales}'",
                    dtype_name(entry.dtype)
                )));
            };
            let want = [rows.div_ceil(block[0]), cols.div_ceil(block[1])];
            if s.dtype != Dtype::F32 || s.shape != want {
                return Err(ConvertError::tensor(
                    &sshard.path,
                    &scales,
                    format!(
                        "block scales of '{name}' ({rows}x{cols} in {}x{} blocks) must be F32 {want:?}, found {} {:?}",
                        block[0],
                        block[1],
                        dtype_name(s.dtype),
                        s.shape
                    ),
                ));
            }
            out.insert(name.clone(), Fp8Slot { scales, block });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_special_values() {
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0x07), 7.0 * 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert!(e4m3_to_f32(0x80) == 0.0 && e4m3_to_f32(0x80).is_sign_negative());
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
        let t = table(Dtype::F8_E4M3).unwrap();
        assert_eq!(t.iter().filter(|v| v.is_finite()).count(), 254);
    }

    #[test]
    fn e5m2_is_the_top_byte_of_a_half() {
        assert_eq!(e5m2_to_f32(0x3C), 1.0);
        assert_eq!(e5m2_to_f32(0x7B), 57344.0);
        assert_eq!(e5m2_to_f32(0x7C), f32::INFINITY);
        assert!(e5m2_to_f32(0x7D).is_nan());
    }

    #[test]
    fn dequantizes_ragged_blocks_and_refuses_nan_codes() {
        let scales: Vec<u8> = [1.0f32, 2.0, 4.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s = BlockScales {
            name: "w_scale_inv",
            path: Path::new("a.safetensors"),
            weight_path: Path::new("b.safetensors"),
            block: [2, 2],
            bytes: &scales,
        };
        // [3, 3] of 1.0 (0x38): blocks of 2x2 with ragged last row and column.
        let codes = [0x38u8; 9];
        let w = dequantize("w", Dtype::F8_E4M3, &[3, 3], &codes, &s).unwrap();
        assert_eq!(w, [1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 4.0, 4.0, 8.0]);
        let mut nan = codes;
        nan[5] = 0xFF;
        let e = dequantize("w", Dtype::F8_E4M3, &[3, 3], &nan, &s)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b.safetensors") && e.contains("'w'") && e.contains("[1, 2]"),
            "{e}"
        );
        let neg: Vec<u8> = [1.0f32, -2.0, 4.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let e = dequantize(
            "w",
            Dtype::F8_E4M3,
            &[3, 3],
            &codes,
            &BlockScales { bytes: &neg, ..s },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("a.safetensors") && e.contains("w_scale_inv") && e.contains("-2"),
            "{e}"
        );
    }
}
