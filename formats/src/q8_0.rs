//! `q8_0`: an 8-bit block format bit-compatible with ggml's Q8_0.
//!
//! Blocks of [`Q8_BLOCK`] = 32 consecutive elements along a row (the last block of a row whose
//! length is not a multiple of 32 is shorter; ggml only knows whole blocks), one f16 scale per
//! block and one int8 code per element, so 8.5 bits per weight. Quantization follows ggml's
//! reference `quantize_row_q8_0_ref` (ggml-quants.c) step for step, so for whole blocks codes
//! and scale bits equal ggml's:
//!
//! - `amax` = largest `|x|` of the block, `d = amax / 127` (f32), `id = 1 / d` (0 when `d` is 0);
//! - code `q = roundf(x * id)`: round half away from zero (C `roundf`, Rust `f32::round`);
//! - the stored scale is `d` rounded to f16 (nearest even). A zero block has `d = 0` and all
//!   codes 0.
//!
//! Dequantization is `q * f16(d)`. The codes use `-127..=127` (`-128` never occurs).
//! tquant stores a q8_0 matrix as its codes (`I8`, `[rows, cols]`, row-major) and its scales
//! (`F16`, `[rows, blocks_per_row]`); ggml interleaves them per block (`d`, then 32 codes).

use crate::FormatError;
use half::f16;

/// Elements per block.
pub const Q8_BLOCK: usize = 32;
/// The largest code magnitude.
pub const Q8_MAX: f32 = 127.0;
/// Stored bits per weight of whole blocks: 8 per code plus a 16-bit scale per 32 codes.
pub const Q8_BITS_PER_WEIGHT: f64 = 8.0 + 16.0 / Q8_BLOCK as f64;
/// The format's name in recipes, files and listings.
pub const Q8_NAME: &str = "q8_0";

/// A matrix quantized to q8_0: codes `[rows, cols]` and f16 scale bits `[rows, blocks]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Q8Matrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// int8 codes, row-major.
    pub codes: Vec<i8>,
    /// f16 scale bits, `[rows, blocks_per_row(cols)]`.
    pub scales: Vec<u16>,
}

/// Blocks in a row of `cols` elements.
pub fn blocks_per_row(cols: usize) -> usize {
    cols.div_ceil(Q8_BLOCK)
}

/// Quantizes one block as ggml does: its f16 scale bits, and the codes into `out`.
pub fn quantize_block(x: &[f32], out: &mut [i8]) -> u16 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / Q8_MAX;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (o, &v) in out.iter_mut().zip(x) {
        // `as` saturates; |v * id| <= 127 up to rounding of `id`, so it never does here.
        *o = (v * id).round() as i8;
    }
    f16::from_f32(d).to_bits()
}

impl Q8Matrix {
    /// Quantizes `w` (`[rows, cols]`, row-major). Values must be finite.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self, FormatError> {
        let n = rows.checked_mul(cols).filter(|&n| n == w.len());
        let Some(n) = n else {
            return Err(FormatError::MatrixLength {
                len: w.len(),
                rows,
                cols,
            });
        };
        if let Some(index) = w.iter().position(|v| !v.is_finite()) {
            return Err(FormatError::NotFinite {
                what: "q8_0 weights",
                index,
                value: w[index],
            });
        }
        let bpr = blocks_per_row(cols);
        let mut codes = vec![0i8; n];
        let mut scales = Vec::with_capacity(rows * bpr);
        for (src, dst) in w.chunks(cols.max(1)).zip(codes.chunks_mut(cols.max(1))) {
            for (xb, qb) in src.chunks(Q8_BLOCK).zip(dst.chunks_mut(Q8_BLOCK)) {
                scales.push(quantize_block(xb, qb));
            }
        }
        Ok(Self {
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// The values the codes stand for (`q * d`), row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for r in 0..self.rows {
            dequantize_row(
                &self.codes[r * self.cols..(r + 1) * self.cols],
                self.row_scales(r),
                &mut out[r * self.cols..(r + 1) * self.cols],
            );
        }
        out
    }

    /// Scale bits of row `r`.
    pub fn row_scales(&self, r: usize) -> &[u16] {
        let bpr = blocks_per_row(self.cols);
        &self.scales[r * bpr..(r + 1) * bpr]
    }

    /// Scales as little-endian bytes (as a safetensors `F16` tensor stores them).
    pub fn scale_bytes(&self) -> Vec<u8> {
        self.scales.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Codes as bytes (as a safetensors `I8` tensor stores them).
    pub fn code_bytes(&self) -> Vec<u8> {
        self.codes.iter().map(|&c| c as u8).collect()
    }

    /// ggml's `block_q8_0` stream of a row-major matrix whose rows are whole blocks: per block
    /// the f16 scale (little-endian), then 32 codes. `None` when `cols` is not a multiple of 32.
    pub fn to_ggml(&self) -> Option<Vec<u8>> {
        if self.cols % Q8_BLOCK != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(self.codes.len() + 2 * self.scales.len());
        for (s, q) in self.scales.iter().zip(self.codes.chunks(Q8_BLOCK)) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend(q.iter().map(|&c| c as u8));
        }
        Some(out)
    }
}

/// Dequantizes one row: `codes` (`cols`) with its f16 scale bits into `out`.
pub fn dequantize_row(codes: &[i8], scales: &[u16], out: &mut [f32]) {
    for ((o, q), s) in out
        .chunks_mut(Q8_BLOCK)
        .zip(codes.chunks(Q8_BLOCK))
        .zip(scales)
    {
        let d = f16::from_bits(*s).to_f32();
        for (v, &c) in o.iter_mut().zip(q) {
            *v = c as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_half_away_from_zero_and_the_scale_is_amax_over_127() {
        // amax 127 gives d = 1 and id = 1: codes are x rounded half away from zero.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.5;
        x[4] = -0.49;
        let mut q = [0i8; 32];
        let d = quantize_block(&x, &mut q);
        assert_eq!(f16::from_bits(d).to_f32(), 1.0);
        assert_eq!(&q[..5], &[127, 3, -3, 1, 0]);
    }

    #[test]
    fn a_zero_block_has_zero_scale_and_codes() {
        let mut q = [5i8; 32];
        assert_eq!(quantize_block(&[0.0; 32], &mut q), 0);
        assert!(q.iter().all(|&c| c == 0));
        let m = Q8Matrix::quantize(&[0.0; 40], 1, 40).unwrap();
        assert!(m.dequantize().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn ragged_rows_end_in_a_short_block() {
        let (rows, cols) = (3, 45);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.7).sin()).collect();
        let m = Q8Matrix::quantize(&w, rows, cols).unwrap();
        assert_eq!(m.scales.len(), rows * 2);
        assert!(m.to_ggml().is_none());
        for (r, (a, b)) in w.chunks(cols).zip(m.dequantize().chunks(cols)).enumerate() {
            for (blk, (xa, xb)) in a.chunks(32).zip(b.chunks(32)).enumerate() {
                let d = f16::from_bits(m.row_scales(r)[blk]).to_f32();
                for (u, v) in xa.iter().zip(xb) {
                    // Half a step, plus the scale's f16 rounding over 127 steps.
                    assert!(
                        (u - v).abs() <= 0.5 * d + 127.0 * d * 2f32.powi(-11),
                        "{u} {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            Q8Matrix::quantize(&[1.0; 5], 2, 3),
            Err(FormatError::MatrixLength { .. })
        ));
        assert!(matches!(
            Q8Matrix::quantize(&[1.0, f32::NAN], 1, 2),
            Err(FormatError::NotFinite { .. })
        ));
    }

    #[test]
    fn bits_per_weight_is_8_5() {
        assert_eq!(Q8_BITS_PER_WEIGHT, 8.5);
    }
}

#[cfg(test)]
mod ggml {
    use super::*;

    /// Blocks written by gguf-py's Q8_0 quantizer (bit-exact with ggml's reference), made by
    /// `scripts/fixtures/q8_0_ggml.py`: zero block, ties, tiny scales, saturated rows.
    #[test]
    fn codes_and_scales_equal_ggml_quantize_row_q8_0_ref() {
        let bytes = include_bytes!("../../tests/data/formats/q8_0_ggml.bin");
        let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let (rows, cols) = (word(0), word(4));
        let x: Vec<f32> = bytes[8..8 + 4 * rows * cols]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let want = &bytes[8 + 4 * rows * cols..];
        let m = Q8Matrix::quantize(&x, rows, cols).unwrap();
        assert_eq!(m.to_ggml().unwrap(), want);
        // The ties row (d = 1): -15.5 -> -16, 0.5 -> 1.
        assert_eq!(m.codes[5 * cols + 1], -15);
        assert_eq!(m.codes[5 * cols + 16], 1);
    }
}
