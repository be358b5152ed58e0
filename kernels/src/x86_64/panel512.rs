//! AVX-512 VNNI decoder and micro-kernel of the fast mode's blocked GEMM (layout in
//! `crate::panel`).
//!
//! - decode: 4 loads of 64 code bytes (a super-chunk of one row), two `vpermt2d` and a blend
//!   per 64-byte step to gather the dwords `4 L + d`, nibble split, `vpshufb` through the
//!   shifted int8 table: 8 stores per row and super-chunk, once per panel of activation rows.
//! - micro-kernel: 4 weight rows x 3 activation rows; per step 4 + 3 loads and 12 `vpdpbusd`;
//!   per super-chunk one `vcvtdq2ps`, one multiply by the activation scales and one FMA by the
//!   weight scales per output. 12 int32 and 12 f32 accumulators stay in registers.

// Tiles index small arrays (rows x activation rows) with the same loop variables.
#![allow(clippy::needless_range_loop)]
use super::avx512::row_scales;
use crate::panel_layout::{
    quantize_piece_scalar, ActSuper, PanelActs, WSuper, MR, NB, PIECES, STEPS, SUPER,
};
use crate::{QMatrix, ACT_BLOCK};
use std::arch::x86_64::*;
use tquant_formats::pack::row_bytes;

/// The activation quantizer: a whole piece (32 values) in registers, the portable one
/// otherwise (a short piece, or a value not finite, whose handling that one defines). Same
/// arithmetic: the max of the magnitudes, `127 / amax`, products rounded to nearest even and
/// clamped, `amax / 127`. Safety: the CPU must have AVX-512 F/BW/VL.
pub(crate) unsafe fn quantize_piece(x: &[f32], dst: &mut ActSuper, lane: usize) {
    // SAFETY: the caller checked the CPU features.
    if x.len() != ACT_BLOCK || !unsafe { quantize_piece_impl(x, dst, lane) } {
        // SAFETY: the portable quantizer runs anywhere.
        unsafe { quantize_piece_scalar(x, dst, lane) }
    }
}

/// The layout's byte order within each 16-byte half of a piece: element `8 d + 2 e + h` to
/// dword `2 d + h` (a step), byte `e`.
const STEP_ORDER: [i8; 16] = [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15];

/// Whether it quantized `x` (32 values); false, with nothing written, if one is not finite.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn quantize_piece_impl(x: &[f32], dst: &mut ActSuper, lane: usize) -> bool {
    // SAFETY: `x` holds 32 values (checked by the caller).
    let (a, b) = unsafe {
        (
            _mm512_loadu_ps(x.as_ptr()),
            _mm512_loadu_ps(x.as_ptr().add(16)),
        )
    };
    let (aa, ab) = (_mm512_abs_ps(a), _mm512_abs_ps(b));
    let inf = _mm512_set1_ps(f32::INFINITY);
    let finite =
        _mm512_cmp_ps_mask::<_CMP_LT_OQ>(aa, inf) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(ab, inf);
    if finite != 0xffff {
        return false;
    }
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(aa, ab));
    if amax == 0.0 {
        // The portable quantizer's zeros (the super-chunk may hold an earlier row's values).
        dst.scale[lane] = 0.0;
        dst.ncorr[lane] = 0;
        for step in dst.vals.iter_mut() {
            step[4 * lane..4 * lane + 4].fill(0);
        }
        return true;
    }
    let inv = _mm512_set1_ps(127.0f32 / amax);
    let round = |v: __m512| {
        let r = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(v, inv),
        );
        _mm512_max_epi32(
            _mm512_min_epi32(r, _mm512_set1_epi32(127)),
            _mm512_set1_epi32(-127),
        )
    };
    let (qa, qb) = (round(a), round(b));
    dst.scale[lane] = amax / 127.0;
    dst.ncorr[lane] = -128 * _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    let bytes = _mm256_set_m128i(_mm512_cvtepi32_epi8(qb), _mm512_cvtepi32_epi8(qa));
    // SAFETY: 16 bytes.
    let order = unsafe { _mm_loadu_si128(STEP_ORDER.as_ptr().cast()) };
    let steps = _mm256_shuffle_epi8(bytes, _mm256_set_m128i(order, order));
    let mut words = [0u32; STEPS];
    // SAFETY: 32 bytes.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), steps) };
    for (step, w) in dst.vals.iter_mut().zip(words) {
        for (o, v) in step[4 * lane..4 * lane + 4].iter_mut().zip(w.to_le_bytes()) {
            *o = v as i8;
        }
    }
    true
}

/// The decoder. Safety: the CPU must have AVX-512 F/BW; `tile` has one entry per super-chunk.
/// `scratch` holds `blocks_per_row + 16` values.
pub(crate) unsafe fn decode(
    q: &QMatrix,
    rows: [usize; MR],
    piece_block: &[i32],
    scratch: &mut [f32],
    tile: &mut [WSuper],
) {
    // SAFETY: the caller checked the CPU features.
    unsafe { decode_impl(q, rows, piece_block, scratch, tile) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn decode_impl(
    q: &QMatrix,
    rows: [usize; MR],
    piece_block: &[i32],
    scratch: &mut [f32],
    tile: &mut [WSuper],
) {
    let blocks = q.blocks_per_row();
    // Block 32: a super-chunk's piece scales are 16 consecutive block scales; block 64: 8,
    // each taken twice.
    let direct = q.block() == 32;
    let pairs = q.block() == 64;
    // SAFETY: 16 i32.
    let twice = unsafe {
        let v: [i32; 16] = std::array::from_fn(|l| (l / 2) as i32);
        _mm512_loadu_si512(v.as_ptr().cast())
    };
    let mask = _mm512_set1_epi8(0x0f);
    // Dword `4 (L % 8) + d` of a register pair: lanes 0-7 from the first two registers of the
    // super-chunk, lanes 8-15 from the last two.
    let idx: [__m512i; 4] = std::array::from_fn(|d| {
        let v: [i32; 16] = std::array::from_fn(|l| (4 * (l % 8) + d) as i32);
        // SAFETY: 16 i32.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    });
    let rb = row_bytes(q.cols());
    let whole = rb / (SUPER / 2);
    for (m, &r) in rows.iter().enumerate() {
        // Each row's own table (the same for every row without row tables).
        let shifted: [u8; 16] = q.row_table_i8(r).map(|v| (v as i16 + 128) as u8);
        // SAFETY: `shifted` is 16 bytes.
        let tbl = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(shifted.as_ptr().cast()) });
        let codes = q.row_codes(r);
        row_scales(q, r, scratch);
        scratch[blocks..].fill(0.0);
        for (s, ws) in tile.iter_mut().enumerate() {
            // SAFETY: `scratch` holds `blocks + 16` values and every piece block is at most
            // `blocks`; with block 32, `16 s < blocks`; with block 64, `8 s < blocks`.
            let sc = unsafe {
                if direct {
                    _mm512_loadu_ps(scratch.as_ptr().add(PIECES * s))
                } else if pairs {
                    // Blocks 8 s.. (8 s + 8 <= blocks + 7): past the row, the zeros.
                    let eight = _mm256_loadu_ps(scratch.as_ptr().add(PIECES / 2 * s));
                    _mm512_permutexvar_ps(twice, _mm512_castps256_ps512(eight))
                } else {
                    let pb = _mm512_loadu_si512(piece_block.as_ptr().add(PIECES * s).cast());
                    _mm512_i32gather_ps::<4>(pb, scratch.as_ptr())
                }
            };
            // SAFETY: a 64-byte aligned row of 16 f32.
            unsafe { _mm512_store_ps(ws.scale[m].as_mut_ptr(), sc) };
            // A super-chunk the row ends inside: its codes zero-padded.
            let mut padded = [0u8; SUPER / 2];
            let src = if s < whole {
                &codes[s * SUPER / 2..(s + 1) * SUPER / 2]
            } else {
                let rest = &codes[s * SUPER / 2..];
                padded[..rest.len()].copy_from_slice(rest);
                &padded[..]
            };
            // SAFETY: `src` holds 256 bytes; each store writes one 64-byte step of row m.
            unsafe {
                let mut v = [_mm512_setzero_si512(); 4];
                for k in 0..4 {
                    v[k] = _mm512_loadu_si512(src.as_ptr().add(64 * k).cast());
                }
                for d in 0..4 {
                    let lo8 = _mm512_permutex2var_epi32(v[0], idx[d], v[1]);
                    let hi8 = _mm512_permutex2var_epi32(v[2], idx[d], v[3]);
                    let c = _mm512_mask_blend_epi32(0xff00, lo8, hi8);
                    let lo = _mm512_and_si512(c, mask);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), mask);
                    let wl = _mm512_shuffle_epi8(tbl, lo);
                    let wh = _mm512_shuffle_epi8(tbl, hi);
                    _mm512_store_si512(ws.vals[2 * d][m].as_mut_ptr().cast(), wl);
                    _mm512_store_si512(ws.vals[2 * d + 1][m].as_mut_ptr().cast(), wh);
                }
            }
        }
    }
}

/// The micro-kernel. Safety: the CPU must have AVX-512 F/BW/VL/VNNI; activation rows
/// `j..j + nb` exist and have as many super-chunks as `tile`; `1 <= nb <= NB`.
pub(crate) unsafe fn micro(tile: &[WSuper], a: &PanelActs, j: usize, nb: usize) -> [[f32; NB]; MR] {
    let mut out = [[0.0f32; NB]; MR];
    // SAFETY: the caller's contract.
    unsafe {
        match nb {
            3 => micro_impl::<3>(tile, a, j, &mut out),
            2 => micro_impl::<2>(tile, a, j, &mut out),
            _ => micro_impl::<1>(tile, a, j, &mut out),
        }
    }
    out
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn micro_impl<const B: usize>(
    tile: &[WSuper],
    a: &PanelActs,
    j: usize,
    out: &mut [[f32; NB]; MR],
) {
    let mut xr: [&[ActSuper]; B] = [a.row(j); B];
    for jj in 1..B {
        xr[jj] = a.row(j + jj);
    }
    let mut facc = [[_mm512_setzero_ps(); B]; MR];
    for (s, ws) in tile.iter().enumerate() {
        // SAFETY: every activation row has `tile.len()` super-chunks (64-byte aligned), and the
        // tile's steps are 64-byte aligned rows of 64 bytes.
        unsafe {
            let mut acc: [[__m512i; B]; MR] = [[_mm512_setzero_si512(); B]; MR];
            for jj in 0..B {
                let c = _mm512_load_si512(xr[jj][s].ncorr.as_ptr().cast());
                for m in 0..MR {
                    acc[m][jj] = c;
                }
            }
            for t in 0..STEPS {
                // A loop, not `array::from_fn`: its closure does not inherit the target
                // features and may stay a call in the innermost loop.
                let mut w = [_mm512_setzero_si512(); MR];
                for m in 0..MR {
                    w[m] = _mm512_load_si512(ws.vals[t][m].as_ptr().cast());
                }
                for jj in 0..B {
                    let x = _mm512_load_si512(xr[jj][s].vals[t].as_ptr().cast());
                    for m in 0..MR {
                        acc[m][jj] = _mm512_dpbusd_epi32(acc[m][jj], w[m], x);
                    }
                }
            }
            for jj in 0..B {
                let xs = _mm512_load_ps(xr[jj][s].scale.as_ptr());
                for m in 0..MR {
                    let f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[m][jj]), xs);
                    let wsc = _mm512_load_ps(ws.scale[m].as_ptr());
                    facc[m][jj] = _mm512_fmadd_ps(f, wsc, facc[m][jj]);
                }
            }
        }
    }
    for m in 0..MR {
        for jj in 0..B {
            out[m][jj] = lane_sum512(facc[m][jj]);
        }
    }
}

/// `lane_sum` of the 16 lanes in registers: the same additions in the same order (lanes
/// `k + 8`, then `k + 4`, `k + 2`, `k + 1` onto lane `k`), so the same result.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane_sum512(v: __m512) -> f32 {
    let hi8 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let a = _mm256_add_ps(_mm512_castps512_ps256(v), hi8);
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps::<1>(c, c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::panel_layout::lane_sum;

    /// The SIMD quantizer writes what the portable one writes, bit for bit: whole pieces,
    /// short ones, all zeros, rounding ties, and pieces with a value not finite.
    #[test]
    fn quantize_piece_matches_portable() {
        if !(std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl"))
        {
            return;
        }
        let empty = ActSuper {
            vals: [[0; 64]; STEPS],
            ncorr: [0; PIECES],
            scale: [0.0; PIECES],
        };
        for seed in 0..300u32 {
            let len = if seed % 5 == 4 {
                1 + seed as usize % 31
            } else {
                32
            };
            let mut x: Vec<f32> = (0..len)
                .map(|i| {
                    let t = (seed * 97 + i as u32 * 13) as f32;
                    (t * 0.37).sin() * 10f32.powi((seed % 9) as i32 - 4)
                })
                .collect();
            match seed % 11 {
                0 => x.fill(0.0),
                // Products landing on .5: 127 / amax * x = k + 0.5.
                1 => x
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = i as f32 + 0.5 - 16.0),
                2 => x[len / 2] = f32::NAN,
                3 => x[len - 1] = f32::INFINITY,
                4 => x[0] = -0.0,
                _ => {}
            }
            let lane = seed as usize % PIECES;
            let (mut want, mut got) = (empty, empty);
            // SAFETY: the portable quantizer runs anywhere; AVX-512 F/BW/VL checked above.
            unsafe {
                quantize_piece_scalar(&x, &mut want, lane);
                quantize_piece(&x, &mut got, lane);
            }
            assert_eq!(got.vals, want.vals, "{x:?}");
            assert_eq!(got.ncorr, want.ncorr, "{x:?}");
            assert_eq!(
                got.scale.map(f32::to_bits),
                want.scale.map(f32::to_bits),
                "{x:?}"
            );
        }
    }

    /// The register reduction gives `lane_sum`'s bits, rounding included.
    #[test]
    fn lane_sum512_matches_lane_sum() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        for seed in 0..200u32 {
            let v: [f32; PIECES] = std::array::from_fn(|i| {
                let x = (seed * 31 + i as u32 * 7919) as f32;
                (x * 0.618).sin() * 10f32.powi((i % 7) as i32 - 3)
            });
            // SAFETY: AVX-512 F is present (checked above); 16 f32.
            let got = unsafe { lane_sum512(_mm512_loadu_ps(v.as_ptr())) };
            assert_eq!(got.to_bits(), lane_sum(&v).to_bits(), "{v:?}");
        }
    }
}
