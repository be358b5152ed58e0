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
use crate::panel_layout::{lane_sum, ActSuper, PanelActs, WSuper, MR, NB, PIECES, STEPS, SUPER};
use crate::QMatrix;
use std::arch::x86_64::*;
use tquant_formats::pack::row_bytes;

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
    // Block 32: a super-chunk's piece scales are 16 consecutive block scales.
    let direct = q.block() == 32;
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
            // `blocks`; with block 32, `16 s < blocks`.
            let sc = unsafe {
                if direct {
                    _mm512_loadu_ps(scratch.as_ptr().add(PIECES * s))
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
                let v: [__m512i; 4] =
                    std::array::from_fn(|k| _mm512_loadu_si512(src.as_ptr().add(64 * k).cast()));
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
    let xr: [&[ActSuper]; B] = std::array::from_fn(|jj| a.row(j + jj));
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
                let w: [__m512i; MR] =
                    std::array::from_fn(|m| _mm512_load_si512(ws.vals[t][m].as_ptr().cast()));
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
            let mut lanes = [0.0f32; PIECES];
            // SAFETY: 16 f32.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), facc[m][jj]) };
            out[m][jj] = lane_sum(&lanes);
        }
    }
}
