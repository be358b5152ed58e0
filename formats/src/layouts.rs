//! Other libraries' 4-bit layouts, bit-exact, both directions. Pure: bytes in, bytes out.
//!
//! * **bitsandbytes NF4** (`bitsandbytes.functional.quantize_4bit(quant_type="nf4")`, bnb 0.50):
//!   blocks run over the *flattened* tensor (a block may cross rows; the last one may be short),
//!   one f32 absmax per block, codes in NF4 table order, element `2j` in the **high** nibble of
//!   byte `j`. [`bnb_nf4_quantize`] follows the CPU path (`backends/default/ops.py`) operation by
//!   operation, so its bytes equal bitsandbytes' own (tests/data/layouts.json, made with bnb).
//! * **OCP MXFP4 as Hugging Face stores it** (gpt-oss; transformers' `integrations/mxfp4.py`):
//!   `*_blocks` u8 `[.., G, 16]` (32 E2M1 codes per group, element `2j` in the **low** nibble)
//!   and `*_scales` u8 `[.., G]`, E8M0 (`2^(byte - 127)`). Byte for byte this is tquant's own
//!   layout ([`crate::pack`]) with the `e2m1` table, blocks of 32 and E8M0 scales, so
//!   [`Mxfp4::into_matrix`] is a move, not a conversion.
//!
//! Non-finite inputs are refused with an error naming the element: bitsandbytes would turn a
//! NaN into a block of code 15 with a NaN absmax, and MXFP4 has no NaN either.

use crate::block::{check_matrix_len, QuantizedMatrix};
use crate::catalog::NF4;
use crate::pack::row_bytes;
use crate::scale::floor_log2;
use crate::{Codebook, FormatError, ScaleDtype};

/// Block sizes bitsandbytes' `quantize_4bit` accepts.
pub const BNB_BLOCKS: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
/// bitsandbytes' default block size (`quantize_4bit(blocksize=None)`, `Params4bit`).
pub const BNB_DEFAULT_BLOCK: usize = 64;
/// bitsandbytes clamps a block's absmax to this before taking its reciprocal
/// (`absmax.clamp(min=1e-38)`, an f32 subnormal).
const BNB_ABSMAX_FLOOR: f32 = 1e-38;
/// Elements per MXFP4 group (OCP MX: 32).
pub const MXFP4_BLOCK: usize = 32;
/// Bytes per MXFP4 group in `*_blocks`.
pub const MXFP4_GROUP_BYTES: usize = MXFP4_BLOCK / 2;

/// A tensor in bitsandbytes' NF4 layout (without double quantization).
#[derive(Debug, Clone, PartialEq)]
pub struct BnbNf4 {
    /// `ceil(numel / 2)` bytes: bnb's `weight` tensor (`[(numel + 1) / 2, 1]` u8).
    pub packed: Vec<u8>,
    /// One f32 per block: bnb's `weight.absmax`.
    pub absmax: Vec<f32>,
    /// Elements per absmax block (one of [`BNB_BLOCKS`]).
    pub blocksize: usize,
    /// Elements of the tensor.
    pub numel: usize,
}

/// bitsandbytes' NF4 decision thresholds, computed as bnb does: `(code[i] + code[i + 1]) / 2` in
/// f32. An input equal to a threshold takes the lower code (`torch.bucketize`, `right=False`).
pub fn bnb_nf4_bounds() -> [f32; 15] {
    std::array::from_fn(|i| (NF4[i] + NF4[i + 1]) / 2.0)
}

#[inline]
fn bnb_code(bounds: &[f32; 15], scaled: f32) -> u8 {
    bounds.iter().map(|&b| (b < scaled) as u8).sum()
}

fn check_finite(x: &[f32], what: &'static str) -> Result<(), FormatError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(FormatError::NotFinite {
            what,
            index: i,
            value: x[i],
        }),
        None => Ok(()),
    }
}

fn check_bnb_blocksize(blocksize: usize) -> Result<(), FormatError> {
    if BNB_BLOCKS.contains(&blocksize) {
        Ok(())
    } else {
        Err(FormatError::BnbBlockSize { blocksize })
    }
}

/// bitsandbytes' `quantize_4bit(x, blocksize, quant_type="nf4")` on the CPU, bit for bit.
///
/// Full blocks: `absmax = max|x|`, `scaled = clamp(x * (1 / max(absmax, 1e-38)), -1, 1)`; the
/// tail block divides instead, `clamp(x / max(absmax, 1e-38), -1, 1)`, and stores the clamped
/// absmax (so an all-zero tail stores 1e-38, a zero full block 0). An odd element count is padded
/// with a 0.0, whose code 7 fills the last low nibble.
pub fn bnb_nf4_quantize(x: &[f32], blocksize: usize) -> Result<BnbNf4, FormatError> {
    check_bnb_blocksize(blocksize)?;
    check_finite(x, "bitsandbytes NF4 input")?;
    let bounds = bnb_nf4_bounds();
    let full = x.len() / blocksize * blocksize;
    let mut absmax = Vec::with_capacity(x.len().div_ceil(blocksize));
    let mut codes = Vec::with_capacity(x.len() + 1);
    for block in x[..full].chunks(blocksize) {
        let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = 1.0 / am.max(BNB_ABSMAX_FLOOR);
        absmax.push(am);
        codes.extend(
            block
                .iter()
                .map(|&v| bnb_code(&bounds, (v * inv).clamp(-1.0, 1.0))),
        );
    }
    let tail = &x[full..];
    if !tail.is_empty() {
        let am = tail
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(BNB_ABSMAX_FLOOR);
        absmax.push(am);
        codes.extend(
            tail.iter()
                .map(|&v| bnb_code(&bounds, (v / am).clamp(-1.0, 1.0))),
        );
    }
    if codes.len() % 2 == 1 {
        codes.push(bnb_code(&bounds, 0.0));
    }
    let packed = codes.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    Ok(BnbNf4 {
        packed,
        absmax,
        blocksize,
        numel: x.len(),
    })
}

impl BnbNf4 {
    /// Checks that the byte and scale counts fit `numel` and `blocksize`.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_bnb_blocksize(self.blocksize)?;
        let (bytes, blocks) = (self.numel.div_ceil(2), self.numel.div_ceil(self.blocksize));
        if self.packed.len() != bytes || self.absmax.len() != blocks {
            return Err(FormatError::BnbLength {
                numel: self.numel,
                blocksize: self.blocksize,
                bytes,
                blocks,
                got_bytes: self.packed.len(),
                got_blocks: self.absmax.len(),
            });
        }
        Ok(())
    }

    /// Code of element `i` (high nibble first).
    #[inline]
    pub fn code(&self, i: usize) -> u8 {
        let b = self.packed[i / 2];
        if i % 2 == 0 {
            b >> 4
        } else {
            b & 0x0f
        }
    }

    /// bitsandbytes' `dequantize_4bit`: `NF4[code] * absmax[block]` in f32.
    pub fn dequantize(&self) -> Result<Vec<f32>, FormatError> {
        self.validate()?;
        Ok((0..self.numel)
            .map(|i| NF4[self.code(i) as usize] * self.absmax[i / self.blocksize])
            .collect())
    }

    /// The same tensor in tquant's layout, as a `[rows, cols]` matrix with the `nf4` codebook and
    /// f32 scales: possible when blocks do not cross rows (`cols` a multiple of `blocksize`).
    /// Only the nibble order changes; the values decode identically.
    pub fn to_matrix(&self, rows: usize, cols: usize) -> Result<QuantizedMatrix, FormatError> {
        self.validate()?;
        if rows.checked_mul(cols) != Some(self.numel) {
            return Err(FormatError::BnbMatrix {
                numel: self.numel,
                rows,
                cols,
            });
        }
        if cols % self.blocksize != 0 {
            return Err(FormatError::BnbRowCross {
                blocksize: self.blocksize,
                cols,
            });
        }
        let rb = row_bytes(cols);
        let mut codes = vec![0u8; rows * rb];
        for r in 0..rows {
            for j in 0..rb {
                let i = r * cols + 2 * j;
                let hi = if 2 * j + 1 < cols {
                    self.code(i + 1)
                } else {
                    0
                };
                codes[r * rb + j] = self.code(i) | (hi << 4);
            }
        }
        let mut scales = Vec::with_capacity(self.absmax.len() * 4);
        for &a in &self.absmax {
            ScaleDtype::F32.push_bytes(a, &mut scales);
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            block: self.blocksize,
            scale_dtype: ScaleDtype::F32,
            codes,
            scales,
        })
    }
}

/// How the E8M0 shared exponent of an MXFP4 group is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MxScaleRule {
    /// OCP MX v1.0: `floor(log2(amax)) - 2` (microxcaling, torchao's default FLOOR, ggml).
    /// Elements round to nearest, ties to even, and saturate at 6 (torchao's conversion): a
    /// group whose amax mantissa is >= 1.5 clips its largest elements to 6.
    #[default]
    Floor,
    /// gpt-oss's `downcast_to_mxfp` (triton_kernels, what transformers' Mxfp4 quantizer calls):
    /// the scale is `amax / 6` rounded *up* to a power of two, so nothing clips, and elements
    /// round to nearest with ties *away from zero*.
    Ceil,
    /// compressed-tensors' `generate_mx_scales` (`mxfp4-pack-quantized`): amax rounded to a
    /// power of two by adding a quarter of the mantissa range and truncating (up iff its
    /// mantissa is >= 1.75), then `- 2`; elements clamp to ±6 and round to nearest even.
    CompressedTensors,
}

/// A `[rows, cols]` matrix in Hugging Face's MXFP4 layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Mxfp4 {
    /// `[rows, cols / 32, 16]` bytes: the `*_blocks` tensor.
    pub blocks: Vec<u8>,
    /// `[rows, cols / 32]` E8M0 bytes: the `*_scales` tensor.
    pub scales: Vec<u8>,
    /// Rows.
    pub rows: usize,
    /// Columns (a multiple of [`MXFP4_BLOCK`]).
    pub cols: usize,
}

/// E2M1 magnitude code of `m >= 0` (already divided by the scale), saturating at 6.
#[inline]
pub(crate) fn e2m1_magnitude(m: f32, ties_away: bool) -> u8 {
    // Midpoints between 0, 0.5, 1, 1.5, 2, 3, 4, 6.
    const MIDS: [f32; 7] = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
    let mut c = 0u8;
    for (k, &t) in MIDS.iter().enumerate() {
        // Ties to even: the upper neighbour of midpoint k has code k + 1.
        let up = if ties_away || m != t {
            m >= t
        } else {
            (k + 1) % 2 == 0
        };
        c += up as u8;
    }
    c
}

fn check_mx_shape(rows: usize, cols: usize, len: usize) -> Result<(), FormatError> {
    check_matrix_len(len, rows, cols)?;
    if cols % MXFP4_BLOCK != 0 {
        return Err(FormatError::Mxfp4Row { cols });
    }
    Ok(())
}

/// Quantizes a row-major `[rows, cols]` matrix (`cols` a multiple of 32) to Hugging Face's MXFP4.
/// The element's sign is kept even when it rounds to zero (code `0b1000`), as every MX converter
/// that works on the bits does. A zero group gets scale byte 0 and zero codes.
pub fn mxfp4_quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    rule: MxScaleRule,
) -> Result<Mxfp4, FormatError> {
    check_mx_shape(rows, cols, w.len())?;
    check_finite(w, "MXFP4 input")?;
    let groups = w.len() / MXFP4_BLOCK;
    let mut blocks = vec![0u8; groups * MXFP4_GROUP_BYTES];
    let mut scales = vec![0u8; groups];
    let mut codes = [0u8; MXFP4_BLOCK];
    for (g, group) in w.chunks(MXFP4_BLOCK).enumerate() {
        let amax = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (byte, ties_away) = match rule {
            MxScaleRule::Floor if amax == 0.0 => (0u8, false),
            MxScaleRule::Floor => ((floor_log2(amax) - 2 + 127).clamp(0, 254) as u8, false),
            MxScaleRule::CompressedTensors => {
                // round_to_power_2: bits + 2^(23 - 1 - 1), exponent kept; a zero or
                // subnormal result has log2 <= -126 and clamps to byte 0, as in torch.
                let p = f32::from_bits((amax.to_bits() + (1 << 21)) & 0xff80_0000);
                let byte = if p == 0.0 {
                    0
                } else {
                    (floor_log2(p) - 2 + 127).clamp(0, 254) as u8
                };
                (byte, false)
            }
            MxScaleRule::Ceil => {
                // triton_kernels: (bits(amax / 6) + 0x7fffff) & 0x7f800000, exponent byte.
                let d = (amax / 6.0).to_bits();
                ((((d + 0x7f_ffff) & 0x7f80_0000) >> 23) as u8, true)
            }
        };
        scales[g] = byte;
        let scale = crate::scale::e8m0_to_f32(byte);
        for (c, &v) in codes.iter_mut().zip(group) {
            // Division by a power of two: exact unless the quotient is subnormal.
            let q = if amax == 0.0 { v } else { v / scale };
            // compressed-tensors takes the sign from `torch.sign`, which is +0 for -0.0.
            let negative = match rule {
                MxScaleRule::CompressedTensors => q < 0.0,
                _ => q.is_sign_negative(),
            };
            let sign = (negative as u8) << 3;
            *c = sign | e2m1_magnitude(q.abs(), ties_away);
        }
        for (j, pair) in codes.chunks(2).enumerate() {
            blocks[g * MXFP4_GROUP_BYTES + j] = pair[0] | (pair[1] << 4);
        }
    }
    Ok(Mxfp4 {
        blocks,
        scales,
        rows,
        cols,
    })
}

impl Mxfp4 {
    /// Checks the byte counts against `[rows, cols]` and refuses the E8M0 NaN scale (255).
    pub fn validate(&self) -> Result<(), FormatError> {
        check_mx_shape(self.rows, self.cols, self.rows * self.cols)?;
        let groups = self.rows * self.cols / MXFP4_BLOCK;
        if self.blocks.len() != groups * MXFP4_GROUP_BYTES || self.scales.len() != groups {
            return Err(FormatError::Mxfp4Length {
                rows: self.rows,
                cols: self.cols,
                blocks: groups * MXFP4_GROUP_BYTES,
                scales: groups,
                got_blocks: self.blocks.len(),
                got_scales: self.scales.len(),
            });
        }
        if let Some(g) = self.scales.iter().position(|&s| s == 255) {
            return Err(FormatError::Mxfp4NanScale { group: g });
        }
        Ok(())
    }

    /// transformers' dequantization: `FP4_VALUES[code] * 2^(scale - 127)`, exact in f32 (up to
    /// f32's range: a scale byte of 254 with code 6 overflows to infinity, as in bf16).
    pub fn dequantize(&self) -> Result<Vec<f32>, FormatError> {
        self.validate()?;
        let e2m1 = mxfp4_codebook();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for (g, bytes) in self.blocks.chunks(MXFP4_GROUP_BYTES).enumerate() {
            let s = crate::scale::e8m0_to_f32(self.scales[g]);
            for &b in bytes {
                out.push(e2m1.decode(b & 0x0f) * s);
                out.push(e2m1.decode(b >> 4) * s);
            }
        }
        Ok(out)
    }

    /// A tquant matrix quantized with the `e2m1` codebook, blocks of 32 and E8M0 scales is
    /// already MXFP4: the bytes move unchanged.
    pub fn from_matrix(m: QuantizedMatrix) -> Result<Mxfp4, FormatError> {
        if m.block != MXFP4_BLOCK || m.scale_dtype != ScaleDtype::E8m0 {
            return Err(FormatError::Mxfp4Layout {
                block: m.block,
                scale_dtype: m.scale_dtype,
            });
        }
        let mx = Mxfp4 {
            blocks: m.codes,
            scales: m.scales,
            rows: m.rows,
            cols: m.cols,
        };
        mx.validate()?;
        Ok(mx)
    }

    /// The same matrix as a tquant [`QuantizedMatrix`] (codebook `e2m1`, block 32, E8M0 scales):
    /// the bytes are already in tquant's layout and are moved unchanged.
    pub fn into_matrix(self) -> Result<QuantizedMatrix, FormatError> {
        self.validate()?;
        Ok(QuantizedMatrix {
            rows: self.rows,
            cols: self.cols,
            block: MXFP4_BLOCK,
            scale_dtype: ScaleDtype::E8m0,
            codes: self.blocks,
            scales: self.scales,
        })
    }
}

/// OCP E2M1 in MXFP4 code order (Hugging Face's `FP4_VALUES`): the catalog's `e2m1`.
pub fn mxfp4_codebook() -> Codebook {
    Codebook::new(crate::generate::sign_magnitude(&crate::catalog::E2M1_MAG))
        .expect("the E2M1 table is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2m1_magnitude_rounds_both_ways_at_ties() {
        let ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
        let even = [0, 2, 2, 4, 4, 6, 6];
        let away = [1, 2, 3, 4, 5, 6, 7];
        for ((&t, &e), &a) in ties.iter().zip(&even).zip(&away) {
            assert_eq!(e2m1_magnitude(t, false), e, "{t} to even");
            assert_eq!(e2m1_magnitude(t, true), a, "{t} away");
        }
        assert_eq!(e2m1_magnitude(100.0, false), 7);
        assert_eq!(e2m1_magnitude(0.0, true), 0);
    }

    #[test]
    fn bnb_bounds_are_bnb_midpoints() {
        let b = bnb_nf4_bounds();
        // kernels.cu's dQuantizeNF4 thresholds, as printed there.
        assert_eq!(b[0], -0.848_096_4);
        assert_eq!(b[8], 0.120_255_25);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }
}
