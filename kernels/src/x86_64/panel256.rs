//! AVX2 decoder and micro-kernel of the fast mode's blocked GEMM (layout in `crate::panel`).
//!
//! A 64-byte step is two ymm: pieces 0-7 and 8-15. Without VNNI the int8 dot is ggml's
//! `vpmaddubsw(|w|, sign(x, w))` + `vpmaddwd(.., 1)`, which needs signed weights (no saturation:
//! `|w|, |x| <= 127`): this decoder stores `table_i8` itself, not shifted, and the piece
//! corrections go unused.
//!
//! - decode: per half super-chunk 4 loads of 32 code bytes, `vpermd` + `vpunpck*qdq` +
//!   `vperm2i128` gather the dwords `4 L + d`, nibble split, `vpshufb` through the table.
//! - micro-kernel: 2 weight rows x 2 activation rows per pass over one half of every super-chunk
//!   (16 registers: 4 int32 and 4 f32 accumulators, the weights and their magnitudes).

// Tiles index small arrays (rows x activation rows) with the same loop variables.
#![allow(clippy::needless_range_loop)]
use super::avx2::row_scales;
use crate::panel_layout::{lane_sum, ActSuper, PanelActs, WSuper, MR, NB, PIECES, STEPS, SUPER};
use crate::QMatrix;
use std::arch::x86_64::*;
use tquant_formats::pack::row_bytes;

/// The decoder. Safety: the CPU must have AVX2/FMA/F16C; `tile` has one entry per super-chunk;
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

#[target_feature(enable = "avx2,fma,f16c")]
fn decode_impl(
    q: &QMatrix,
    rows: [usize; MR],
    piece_block: &[i32],
    scratch: &mut [f32],
    tile: &mut [WSuper],
) {
    let blocks = q.blocks_per_row();
    let mask = _mm256_set1_epi8(0x0f);
    // Within each register, the dwords of each pair of lanes `L` interleaved: qword `d` holds
    // dword `d` of lane `2k` and of lane `2k + 1`.
    let pair = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let rb = row_bytes(q.cols());
    let whole = rb / (SUPER / 2);
    for (m, &r) in rows.iter().enumerate() {
        // Each row's own table (the same for every row without row tables).
        // SAFETY: the int8 table is 16 bytes.
        let tbl = _mm256_broadcastsi128_si256(unsafe {
            _mm_loadu_si128(q.row_table_i8(r).as_ptr().cast())
        });
        let codes = q.row_codes(r);
        row_scales(q, r, scratch);
        scratch[blocks..].fill(0.0);
        for (s, ws) in tile.iter_mut().enumerate() {
            for (v, &b) in ws.scale[m].iter_mut().zip(&piece_block[s * PIECES..]) {
                *v = scratch[b as usize];
            }
            // A super-chunk the row ends inside: its codes zero-padded.
            let mut padded = [0u8; SUPER / 2];
            let src = if s < whole {
                &codes[s * SUPER / 2..(s + 1) * SUPER / 2]
            } else {
                let rest = &codes[s * SUPER / 2..];
                padded[..rest.len()].copy_from_slice(rest);
                &padded[..]
            };
            for h in 0..2 {
                // SAFETY: `src` holds 256 bytes; each store writes half of one 64-byte step.
                unsafe {
                    let a: [__m256i; 4] = std::array::from_fn(|k| {
                        let v = _mm256_loadu_si256(src.as_ptr().add(128 * h + 32 * k).cast());
                        _mm256_permutevar8x32_epi32(v, pair)
                    });
                    let t0 = _mm256_unpacklo_epi64(a[0], a[1]);
                    let t1 = _mm256_unpackhi_epi64(a[0], a[1]);
                    let t2 = _mm256_unpacklo_epi64(a[2], a[3]);
                    let t3 = _mm256_unpackhi_epi64(a[2], a[3]);
                    let c = [
                        _mm256_permute2x128_si256(t0, t2, 0x20),
                        _mm256_permute2x128_si256(t1, t3, 0x20),
                        _mm256_permute2x128_si256(t0, t2, 0x31),
                        _mm256_permute2x128_si256(t1, t3, 0x31),
                    ];
                    for d in 0..4 {
                        let lo = _mm256_and_si256(c[d], mask);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(c[d], 4), mask);
                        let dst_lo = ws.vals[2 * d][m].as_mut_ptr().add(32 * h);
                        let dst_hi = ws.vals[2 * d + 1][m].as_mut_ptr().add(32 * h);
                        _mm256_store_si256(dst_lo.cast(), _mm256_shuffle_epi8(tbl, lo));
                        _mm256_store_si256(dst_hi.cast(), _mm256_shuffle_epi8(tbl, hi));
                    }
                }
            }
        }
    }
}

/// The micro-kernel. Safety: the CPU must have AVX2/FMA; activation rows `j..j + nb` exist
/// and have as many super-chunks as `tile`; `1 <= nb <= NB`; `tile` came from [`decode`].
pub(crate) unsafe fn micro(tile: &[WSuper], a: &PanelActs, j: usize, nb: usize) -> [[f32; NB]; MR] {
    let mut out = [[0.0f32; NB]; MR];
    for m0 in (0..MR).step_by(2) {
        let mut jj = 0;
        while jj < nb {
            // SAFETY: the caller's contract.
            unsafe {
                if nb - jj >= 2 {
                    let s = micro_impl::<2>(tile, a, j + jj, m0);
                    for m in 0..2 {
                        out[m0 + m][jj..jj + 2].copy_from_slice(&s[m]);
                    }
                    jj += 2;
                } else {
                    let s = micro_impl::<1>(tile, a, j + jj, m0);
                    for m in 0..2 {
                        out[m0 + m][jj] = s[m][0];
                    }
                    jj += 1;
                }
            }
        }
    }
    out
}

/// Tile rows `m0, m0 + 1` times activation rows `j..j + B`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn micro_impl<const B: usize>(
    tile: &[WSuper],
    a: &PanelActs,
    j: usize,
    m0: usize,
) -> [[f32; B]; 2] {
    let ones = _mm256_set1_epi16(1);
    let xr: [&[ActSuper]; B] = std::array::from_fn(|jj| a.row(j + jj));
    let mut lanes = [[[0.0f32; PIECES]; B]; 2];
    for h in 0..2 {
        let mut facc = [[_mm256_setzero_ps(); B]; 2];
        for (s, ws) in tile.iter().enumerate() {
            // SAFETY: every activation row has `tile.len()` super-chunks; the steps' halves
            // are 32-byte aligned.
            unsafe {
                let mut acc = [[_mm256_setzero_si256(); B]; 2];
                for t in 0..STEPS {
                    let w: [__m256i; 2] = std::array::from_fn(|m| {
                        _mm256_load_si256(ws.vals[t][m0 + m].as_ptr().add(32 * h).cast())
                    });
                    let aw: [__m256i; 2] = std::array::from_fn(|m| _mm256_abs_epi8(w[m]));
                    for jj in 0..B {
                        let x = _mm256_load_si256(xr[jj][s].vals[t].as_ptr().add(32 * h).cast());
                        for m in 0..2 {
                            let p = _mm256_maddubs_epi16(aw[m], _mm256_sign_epi8(x, w[m]));
                            acc[m][jj] = _mm256_add_epi32(acc[m][jj], _mm256_madd_epi16(p, ones));
                        }
                    }
                }
                for jj in 0..B {
                    let xs = _mm256_load_ps(xr[jj][s].scale.as_ptr().add(8 * h));
                    for m in 0..2 {
                        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[m][jj]), xs);
                        let wsc = _mm256_load_ps(ws.scale[m0 + m].as_ptr().add(8 * h));
                        facc[m][jj] = _mm256_fmadd_ps(f, wsc, facc[m][jj]);
                    }
                }
            }
        }
        for m in 0..2 {
            for jj in 0..B {
                // SAFETY: 8 f32 into lanes 8h..8h + 8.
                unsafe { _mm256_storeu_ps(lanes[m][jj].as_mut_ptr().add(8 * h), facc[m][jj]) };
            }
        }
    }
    std::array::from_fn(|m| std::array::from_fn(|jj| lane_sum(&lanes[m][jj])))
}
