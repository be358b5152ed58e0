//! NVFP4, bit-exact with compressed-tensors 0.20 (`nvfp4-pack-quantized`, what llm-compressor
//! writes and vLLM loads): E2M1 codes in blocks of 16 along a row, one E4M3 scale per block and
//! one f32 scale per tensor. Pure: values in, bytes out.
//!
//! compressed-tensors calls the per-tensor scale `weight_global_scale` and *divides* by it:
//!
//! * `global = 448 · 6 / amax(W)` in f32, computed as torch does `2688 / tensor`:
//!   `(1 / amax) · 2688` (`generate_gparam`; amax at least f32's smallest normal, a non-finite
//!   result becomes 1);
//! * per block `s = e4m3(clamp(global · (blockamax / 6), ±448))`, a zero `s` replaced by 0.125
//!   (`calculate_qparams`);
//! * element `q = E2M1(clamp(x / (f32(s) / global), ±6))`, round to nearest, ties to even
//!   (`cast_to_fp4`), the sign kept when a negative value rounds to zero (code 8);
//! * dequantized `E2M1(q) · (f32(s) / global)` (`_dequantize`).
//!
//! Codes pack as tquant's own layout ([`crate::pack`]): element `2k` in the low nibble of byte
//! `k`. NVIDIA ModelOpt stores the same bytes with the reciprocal (`weight_scale_2`, a multiplier).

use crate::block::check_matrix_len;
use crate::layouts::e2m1_magnitude;
use crate::scale::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX};
use crate::FormatError;

/// Elements per NVFP4 block.
pub const NVFP4_BLOCK: usize = 16;
/// Largest E2M1 magnitude.
const E2M1_MAX: f32 = 6.0;
/// compressed-tensors' replacement for a zero block scale (`_get_dtype_eps(float8_e4m3fn)`).
const ZERO_SCALE: f32 = 0.125;

/// A `[rows, cols]` matrix in NVFP4.
#[derive(Debug, Clone, PartialEq)]
pub struct Nvfp4 {
    /// `[rows, cols / 2]` packed E2M1 codes (`weight_packed`).
    pub packed: Vec<u8>,
    /// `[rows, cols / 16]` E4M3 bytes (`weight_scale`).
    pub scales: Vec<u8>,
    /// The divisor (`weight_global_scale`).
    pub global_scale: f32,
    /// Rows.
    pub rows: usize,
    /// Columns (a multiple of [`NVFP4_BLOCK`]).
    pub cols: usize,
}

/// compressed-tensors' `generate_gparam` for a tensor whose largest magnitude is `amax`.
pub fn nvfp4_global_scale(amax: f32) -> f32 {
    // torch evaluates `2688 / t` as `t.reciprocal() * 2688`: two roundings, kept here.
    let g = (1.0 / amax.abs().max(f32::MIN_POSITIVE)) * (E4M3_MAX * E2M1_MAX);
    if g.is_finite() {
        g
    } else {
        1.0
    }
}

fn check_shape(rows: usize, cols: usize, len: usize) -> Result<(), FormatError> {
    check_matrix_len(len, rows, cols)?;
    if cols % NVFP4_BLOCK != 0 {
        return Err(FormatError::Nvfp4Row { cols });
    }
    Ok(())
}

/// The E2M1 code of `x` already divided by its scale: clamp to ±6, round to nearest even,
/// sign bit from `x` (so a negative value that rounds to zero is code 8).
#[inline]
pub fn e2m1_code(x: f32) -> u8 {
    let sign = ((x < 0.0) as u8) << 3;
    sign | e2m1_magnitude(x.abs().min(E2M1_MAX), false)
}

/// Quantizes a row-major `[rows, cols]` matrix as compressed-tensors does, with the tensor
/// scale `global_scale` (from [`nvfp4_global_scale`], or shared by fused layers).
pub fn nvfp4_quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    global_scale: f32,
) -> Result<Nvfp4, FormatError> {
    encode(w, rows, cols, global_scale, |amax| {
        let mut s = e4m3_to_f32(f32_to_e4m3(global_scale * (amax / E2M1_MAX)));
        if s == 0.0 {
            s = ZERO_SCALE;
        }
        (f32_to_e4m3(s), s / global_scale)
    })
}

/// Checks `w` and packs it block by block: `block_scale(amax)` gives a block's stored E4M3
/// byte and the step its elements are divided by before rounding to E2M1.
fn encode(
    w: &[f32],
    rows: usize,
    cols: usize,
    global_scale: f32,
    block_scale: impl Fn(f32) -> (u8, f32),
) -> Result<Nvfp4, FormatError> {
    check_shape(rows, cols, w.len())?;
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(FormatError::NotFinite {
            what: "NVFP4 input",
            index: i,
            value: w[i],
        });
    }
    let mut packed = vec![0u8; w.len() / 2];
    let mut scales = Vec::with_capacity(w.len() / NVFP4_BLOCK);
    for (b, block) in w.chunks(NVFP4_BLOCK).enumerate() {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (byte, step) = block_scale(amax);
        scales.push(byte);
        for (k, pair) in block.chunks(2).enumerate() {
            let lo = e2m1_code(pair[0] / step);
            let hi = e2m1_code(pair[1] / step);
            packed[b * NVFP4_BLOCK / 2 + k] = lo | (hi << 4);
        }
    }
    Ok(Nvfp4 {
        packed,
        scales,
        global_scale,
        rows,
        cols,
    })
}

impl Nvfp4 {
    /// Checks byte counts against `[rows, cols]`, and that no scale is NaN and the tensor scale
    /// is finite and positive.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_shape(self.rows, self.cols, self.rows * self.cols)?;
        let n = self.rows * self.cols;
        if self.packed.len() != n / 2 || self.scales.len() != n / NVFP4_BLOCK {
            return Err(FormatError::Nvfp4Length {
                rows: self.rows,
                cols: self.cols,
                got_packed: self.packed.len(),
                got_scales: self.scales.len(),
            });
        }
        if let Some(b) = self.scales.iter().position(|&s| s & 0x7f == 0x7f) {
            return Err(FormatError::Nvfp4NanScale { block: b });
        }
        if !(self.global_scale.is_finite() && self.global_scale > 0.0) {
            return Err(FormatError::Nvfp4GlobalScale {
                value: self.global_scale,
            });
        }
        Ok(())
    }

    /// Each block's scale as the dequantization multiplies by it: `f32(s) / global_scale`.
    pub fn step_scales(&self) -> Vec<f32> {
        nvfp4_step_scales(&self.scales, self.global_scale)
    }

    /// compressed-tensors' decompression in f32: `E2M1(q) · (f32(s) / global_scale)` (it then
    /// casts to the model dtype).
    pub fn dequantize(&self) -> Result<Vec<f32>, FormatError> {
        self.validate()?;
        let e2m1 = crate::layouts::mxfp4_codebook();
        let steps = self.step_scales();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for (b, bytes) in self.packed.chunks(NVFP4_BLOCK / 2).enumerate() {
            for &byte in bytes {
                out.push(e2m1.decode(byte & 0x0f) * steps[b]);
                out.push(e2m1.decode(byte >> 4) * steps[b]);
            }
        }
        Ok(out)
    }
}

/// E4M3 block scales divided by a tensor scale, as compressed-tensors dequantizes with them.
pub fn nvfp4_step_scales(scales: &[u8], global_scale: f32) -> Vec<f32> {
    scales
        .iter()
        .map(|&s| e4m3_to_f32(s) / global_scale)
        .collect()
}

/// NVIDIA ModelOpt's per-tensor multiplier for a tensor whose largest magnitude is `amax`:
/// `weight_scale_2 = amax / (6 · 448)` (`NVFP4QTensor.get_weights_scaling_factor_2`).
pub fn modelopt_scale_2(amax: f32) -> f32 {
    amax.abs() / (E2M1_MAX * E4M3_MAX)
}

/// A `[rows, cols]` matrix quantized as NVIDIA ModelOpt 0.47 does (`NVFP4QTensor.quantize` on
/// f32 weights): block scale `e4m3(clamp(blockamax / (6 · scale_2), 2^-9, 448))`, a zero block's
/// 1.0; element `E2M1(x / (f32(s) · scale_2))`, ties to even; dequantized
/// `E2M1 · (f32(s) · scale_2)`. The bytes are `Nvfp4`'s, `global_scale` holding `scale_2`, a
/// multiplier here.
pub fn nvfp4_quantize_modelopt(
    w: &[f32],
    rows: usize,
    cols: usize,
    scale_2: f32,
) -> Result<Nvfp4, FormatError> {
    let denom = E2M1_MAX * scale_2;
    encode(w, rows, cols, scale_2, |amax| {
        let mut s = amax / denom;
        if s == 0.0 {
            s = 1.0;
        }
        let byte = f32_to_e4m3(s.max(1.0 / 512.0));
        (byte, e4m3_to_f32(byte) * scale_2)
    })
}

/// ModelOpt's E2M1 table (`e2m1_values`): code 8 decodes to +0, not -0 as in OCP's E2M1.
pub fn modelopt_e2m1() -> [f32; 16] {
    let mut t = [0.0f32; 16];
    for (i, v) in t.iter_mut().enumerate() {
        let m = crate::catalog::E2M1_MAG[i & 7];
        *v = if i >= 8 { -m } else { m };
    }
    t[8] = 0.0;
    t
}

/// E4M3 block scales times a ModelOpt multiplier (`weight_scale_2`), as ModelOpt dequantizes.
pub fn modelopt_step_scales(scales: &[u8], scale_2: f32) -> Vec<f32> {
    scales.iter().map(|&s| e4m3_to_f32(s) * scale_2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_scale_follows_generate_gparam() {
        assert_eq!(nvfp4_global_scale(2688.0), 1.0);
        assert_eq!(nvfp4_global_scale(-1.0), 2688.0);
        // Two roundings, as torch: 1/amax, then times 2688.
        let amax = 0.396_484_4f32;
        assert_eq!(nvfp4_global_scale(amax), (1.0 / amax) * 2688.0);
        assert_eq!(nvfp4_global_scale(0.0), 1.0); // 2688 / 2^-126 overflows f32
        assert_eq!(nvfp4_global_scale(f32::NAN), 1.0);
    }

    #[test]
    fn a_block_round_trips_through_its_scales() {
        let w: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.01).collect();
        let g = nvfp4_global_scale(0.155);
        let q = nvfp4_quantize(&w, 1, 32, g).unwrap();
        let d = q.dequantize().unwrap();
        for (a, b) in w.iter().zip(&d) {
            assert!((a - b).abs() <= 0.155 / 6.0, "{a} {b}");
        }
        assert_eq!(q.scales[0], f32_to_e4m3(448.0)); // the tensor's largest block maps to 448
        let zero = nvfp4_quantize(&[0.0; 16], 1, 16, 1.0).unwrap();
        assert_eq!(zero.scales, vec![f32_to_e4m3(0.125)]);
        assert_eq!(e2m1_code(-0.1), 8);
        assert!(nvfp4_quantize(&[0.0; 24], 1, 24, 1.0).is_err());
    }
}
