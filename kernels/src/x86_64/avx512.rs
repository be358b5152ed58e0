//! AVX-512 (F, BW, VL, VNNI) kernels.
//!
//! - fast: a 16-entry int8 table (shifted by +128 to be unsigned) sits in each 128-bit lane of a
//!   zmm; `vpshufb` decodes 128 codes (64 bytes) into two zmm of table values, `vpdpbusd` dots
//!   them with the activations (stored in chunk order, see `act`), each int32 lane starting at
//!   `-128 * sum(x)` to undo the shift; one `vcvtdq2ps` + `vfmadd` per chunk applies the
//!   activation and weight scales of the lane's piece.
//! - exact: the 16-entry f32 table, pre-multiplied by the block scale, sits in one zmm;
//!   `vpermps` decodes 16 codes at a time (the low nibble of a zero-extended byte is the even
//!   element; shifted right by 4, the odd one).
//! - f32: register-blocked dot products, masked loads for the tails.
//!
//! GEMV uses tiles of 4 weight rows; GEMM tiles of 2 weight rows x 4 activation rows reuse each
//! decoded chunk 4 times.

// Tiles index several small arrays (rows x activation rows) with the same loop variables.
#![allow(clippy::needless_range_loop)]
use super::{padded_codes, tiles, with_tile, F32Tile, Prefetch, Tile, PER_ROW, SHARED};
use crate::act::{Chunk, FastActs, CHUNK, GROUP, LANES};
use crate::isa::Acts;
use crate::{scalar, QMatrix, ScaleDtype};
use std::arch::x86_64::*;

/// GEMM tiles (weight rows, activation rows) of each kernel.
const FAST_GEMM_TILE: (usize, usize) = (4, 4);
const EXACT_GEMM_TILE: (usize, usize) = (4, 4);
const F32_GEMM_TILE: (usize, usize) = (4, 4);

/// The fast kernel. Safety: the CPU must have AVX-512 F/BW/VL/VNNI; `out` holds whole rows.
pub(crate) unsafe fn fast_rows(q: &QMatrix, a: &Acts, n: usize, r0: usize, out: &mut [f32]) {
    if let Acts::Fast(a) = a {
        // SAFETY: the caller checked the CPU features.
        unsafe { fast_rows_impl(q, a, n, r0, out) }
    }
}

/// The exact kernel. Safety: as [`fast_rows`].
pub(crate) unsafe fn exact_rows(q: &QMatrix, a: &Acts, n: usize, r0: usize, out: &mut [f32]) {
    if let Acts::Exact(x) = a {
        // SAFETY: the caller checked the CPU features.
        unsafe { exact_rows_impl(q, x, n, r0, out) }
    }
}

/// The dense f32 kernel. Safety: as [`fast_rows`].
pub(crate) unsafe fn f32_rows(
    w: &[f32],
    cols: usize,
    x: &[f32],
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the CPU features.
    unsafe { f32_rows_impl(w, cols, x, n, r0, out) }
}

/// Converts the scales of row `r` to f32 into `out[..blocks]`, 16 at a time; the last group
/// of a row whose block count is not a multiple of 16 is read masked (a scalar tail costs as
/// much as the row's products on short rows).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) fn row_scales(q: &QMatrix, r: usize, out: &mut [f32]) {
    let bytes = q.row_scales(r);
    let nb = q.blocks_per_row();
    let mut b = 0;
    while b < nb {
        let lanes = (nb - b).min(16);
        let m = ((1u32 << lanes) - 1) as __mmask16;
        let v = match q.scale_dtype() {
            // SAFETY (all masked loads): blocks b..b + lanes exist, so the row holds at least
            // (b + lanes) * size bytes, and the mask reads no more.
            ScaleDtype::F32 => unsafe {
                _mm512_maskz_loadu_ps(m, bytes.as_ptr().add(4 * b).cast())
            },
            ScaleDtype::F16 => {
                let h = unsafe { _mm256_maskz_loadu_epi16(m, bytes.as_ptr().add(2 * b).cast()) };
                _mm512_cvtph_ps(h)
            }
            ScaleDtype::Bf16 => {
                let h = unsafe { _mm256_maskz_loadu_epi16(m, bytes.as_ptr().add(2 * b).cast()) };
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            }
            ScaleDtype::E4m3 => {
                // One byte each, decoded by table lookup (no SIMD conversion needed).
                let t: [f32; 16] = std::array::from_fn(|i| {
                    if i < lanes {
                        q.scale_dtype().read(bytes, b + i)
                    } else {
                        0.0
                    }
                });
                // SAFETY: `t` holds 16 floats.
                unsafe { _mm512_loadu_ps(t.as_ptr()) }
            }
            ScaleDtype::E8m0 => {
                let e = unsafe { _mm_maskz_loadu_epi8(m, bytes.as_ptr().add(b).cast()) };
                let e = _mm512_cvtepu8_epi32(e);
                let v = _mm512_slli_epi32(e, 23);
                // Byte 0 is 2^-127 (a subnormal), byte 255 NaN (OCP MX).
                let zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
                let nan = _mm512_cmpeq_epi32_mask(e, _mm512_set1_epi32(255));
                let v = _mm512_mask_mov_epi32(v, zero, _mm512_set1_epi32(1 << 22));
                let v = _mm512_mask_mov_epi32(v, nan, _mm512_set1_epi32(0x7fc0_0000));
                _mm512_castsi512_ps(v)
            }
        };
        // SAFETY: `out` has room for `blocks_per_row` values (checked by the caller's sizing);
        // the store is masked to the blocks that exist.
        unsafe { _mm512_mask_storeu_ps(out[b..].as_mut_ptr(), m, v) };
        b += lanes;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn fast_rows_impl(q: &QMatrix, a: &FastActs, n: usize, r0: usize, out: &mut [f32]) {
    fast_rows_with(q, a, n, r0, out, vbmi_available())
}

/// Whether this CPU has AVX512-VBMI (`vpermb`), which the fast tile's lookups use when present.
pub(crate) fn vbmi_available() -> bool {
    static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F.get_or_init(|| std::is_x86_feature_detected!("avx512vbmi"))
}

/// [`fast_rows_impl`] with the lookup chosen: `vbmi` (which the CPU must have) or `vpshufb`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn fast_rows_with(q: &QMatrix, a: &FastActs, n: usize, r0: usize, out: &mut [f32], vbmi: bool) {
    let rows = out.len() / n;
    // Room for 4 rows of scales, each padded by 16 so a 16-float window never runs past it.
    let stride = q.blocks_per_row() + 16;
    let mut sc = vec![0.0f32; 4 * stride];
    for (r, mr, j, nb) in tiles(rows, n, FAST_GEMM_TILE) {
        if j == 0 {
            for m in 0..mr {
                row_scales(q, r0 + r + m, &mut sc[m * stride..(m + 1) * stride]);
            }
        }
        let t = Tile {
            q,
            r0,
            r: r0 + r,
            j0: j,
            n,
            sc: &sc,
            stride,
            tail_f32: &[],
            tail_len: 0,
        };
        // SAFETY: features enabled here (VBMI checked); tile shapes are in range (tile_loop).
        unsafe {
            match (vbmi, q.has_row_tables()) {
                (true, true) => with_tile!(fast_tile_vbmi, [PER_ROW], mr, nb, (&t, a, out)),
                (true, false) => with_tile!(fast_tile_vbmi, [SHARED], mr, nb, (&t, a, out)),
                (false, true) => with_tile!(fast_tile, [PER_ROW], mr, nb, (&t, a, out)),
                (false, false) => with_tile!(fast_tile, [SHARED], mr, nb, (&t, a, out)),
            }
        }
    }
}

/// The fast tile with the table lookup `$lo(tbl, codes)` / `$hi(tbl, codes)` (the low and high
/// nibbles' shifted table values).
macro_rules! fast_tile {
    ($name:ident, $features:literal, $lo:ident, $hi:ident) => {
        /// Safety: the features; rows `t.r..t.r + MR` and activation rows `t.j0..t.j0 + NB`
        /// exist; `a` has the chunk order over `a.main` elements; `t.sc` holds MR rows of scales.
        #[target_feature(enable = $features)]
        unsafe fn $name<const ROWS: bool, const MR: usize, const NB: usize>(
            t: &Tile,
            a: &FastActs,
            out: &mut [f32],
        ) {
            let q = t.q;
            let table = |r: usize| {
                let shifted: [u8; 16] = q.row_table_i8(r).map(|v| (v as i16 + 128) as u8);
                // SAFETY: `shifted` is 16 bytes.
                _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(shifted.as_ptr().cast()) })
            };
            // One register for a shared table, one per row for row tables.
            let tbl: [__m512i; MR] = if ROWS {
                std::array::from_fn(|m| table(t.r + m))
            } else {
                [table(t.r); MR]
            };
            let codes: [*const u8; MR] = std::array::from_fn(|m| q.row_codes(t.r + m).as_ptr());
            // A row that ends inside its last chunk: that chunk's codes, zero-padded (the activations
            // there are zero).
            let full = q.cols() / CHUNK;
            let last: [[u8; CHUNK / 2]; MR] =
                std::array::from_fn(|m| padded_codes(q, t.r + m, full));
            let scp: [*const f32; MR] = std::array::from_fn(|m| t.sc[m * t.stride..].as_ptr());
            let xc: [*const Chunk; NB] = std::array::from_fn(|j| a.row_chunks(t.j0 + j).as_ptr());
            let mut acc = [[_mm512_setzero_ps(); NB]; MR];
            let ahead = Prefetch::next_tile(q, t.r, MR);
            for (c, &base) in a.chunk_block.iter().enumerate() {
                ahead.step(c, MR);
                // SAFETY: chunk c < main / 128: a whole chunk (c < full) has 64 code bytes in its row,
                // the last partial one is read from `last`; each activation row has c + 1 chunks
                // (64-byte aligned); the lane block indices are < 16 and `base + 16 <= blocks + 16`,
                // inside the padded scale rows.
                unsafe {
                    let idx = _mm512_loadu_si512(a.lane_block.as_ptr().add(c * LANES).cast());
                    let mut wlo = [_mm512_setzero_si512(); MR];
                    let mut whi = [_mm512_setzero_si512(); MR];
                    let mut ws = [_mm512_setzero_ps(); MR];
                    for m in 0..MR {
                        let src = if c < full {
                            codes[m].add(c * CHUNK / 2)
                        } else {
                            last[m].as_ptr()
                        };
                        let v = _mm512_loadu_si512(src.cast());
                        wlo[m] = $lo(tbl[m], v);
                        whi[m] = $hi(tbl[m], v);
                        ws[m] = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(scp[m].add(base)));
                    }
                    for j in 0..NB {
                        let ch = &*xc[j].add(c);
                        let xl = _mm512_load_si512(ch.even.as_ptr().cast());
                        let xh = _mm512_load_si512(ch.odd.as_ptr().cast());
                        let corr = _mm512_load_si512(ch.ncorr.as_ptr().cast());
                        let s = _mm512_load_ps(ch.scale.as_ptr());
                        for m in 0..MR {
                            let d = _mm512_dpbusd_epi32(corr, wlo[m], xl);
                            let d = _mm512_dpbusd_epi32(d, whi[m], xh);
                            let f = _mm512_cvtepi32_ps(d);
                            acc[m][j] = _mm512_fmadd_ps(f, _mm512_mul_ps(s, ws[m]), acc[m][j]);
                        }
                    }
                }
            }
            for m in 0..MR {
                for j in 0..NB {
                    let step = q.row_table_step(t.r + m);
                    out[t.out_index(m, j)] = _mm512_reduce_add_ps(acc[m][j]) * step;
                }
            }
        }
    };
}

fast_tile!(
    fast_tile,
    "avx512f,avx512bw,avx512vl,avx512vnni",
    lo_shufb,
    hi_shufb
);
fast_tile!(
    fast_tile_vbmi,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi",
    lo_permb,
    hi_permb
);

/// The table values (`tbl`: 16 bytes in each 128-bit lane) of the low nibbles of `v`:
/// `vpshufb` reads an index's low 4 bits and zeroes the byte when bit 7 is set, so the
/// nibble is masked first.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn lo_shufb(tbl: __m512i, v: __m512i) -> __m512i {
    _mm512_shuffle_epi8(tbl, _mm512_and_si512(v, _mm512_set1_epi8(0x0f)))
}

/// The table values of the high nibbles of `v` (as [`lo_shufb`]).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn hi_shufb(tbl: __m512i, v: __m512i) -> __m512i {
    let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0f));
    _mm512_shuffle_epi8(tbl, hi)
}

/// The table values of the low nibbles of `v` by `vpermb`, which reads an index's low 6 bits
/// and never zeroes: `tbl` repeats every 16 bytes, so bits 4 and 5 pick the same value and no
/// mask is needed.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
#[inline]
fn lo_permb(tbl: __m512i, v: __m512i) -> __m512i {
    _mm512_permutexvar_epi8(v, tbl)
}

/// The table values of the high nibbles of `v` by `vpermb`: a 16-bit shift by 4 brings each
/// byte's high nibble to its low bits (the bits shifted in above it are ignored, as in
/// [`lo_permb`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
#[inline]
fn hi_permb(tbl: __m512i, v: __m512i) -> __m512i {
    _mm512_permutexvar_epi8(_mm512_srli_epi16(v, 4), tbl)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn exact_rows_impl(q: &QMatrix, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    let rows = out.len() / n;
    let stride = q.blocks_per_row() + 16;
    let mut sc = vec![0.0f32; 4 * stride];
    let tail_len = q.cols() % GROUP;
    let main = q.cols() - tail_len;
    let mut tail = vec![0.0f32; 4 * tail_len];
    for (r, mr, j, nb) in tiles(rows, n, EXACT_GEMM_TILE) {
        if j == 0 {
            for m in 0..mr {
                row_scales(q, r0 + r + m, &mut sc[m * stride..(m + 1) * stride]);
                let scales = &sc[m * stride..m * stride + q.blocks_per_row()];
                let wt = &mut tail[m * tail_len..(m + 1) * tail_len];
                scalar::decode_tail_exact(q, r0 + r + m, scales, main, wt);
            }
        }
        let t = Tile {
            q,
            r0,
            r: r0 + r,
            j0: j,
            n,
            sc: &sc,
            stride,
            tail_f32: &tail,
            tail_len,
        };
        // SAFETY: features enabled here; tile shapes are in range (tile_loop).
        unsafe {
            if q.has_row_tables() {
                with_tile!(exact_tile, [PER_ROW], mr, nb, (&t, x, out))
            } else {
                with_tile!(exact_tile, [SHARED], mr, nb, (&t, x, out))
            }
        }
    }
}

/// Safety: AVX-512 F/BW/VL; rows and activation rows of the tile exist; `x` is in the exact
/// group order over `cols / 32 * 32` elements of each row; the shape is SIMD-regular.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn exact_tile<const ROWS: bool, const MR: usize, const NB: usize>(
    t: &Tile,
    x: &[f32],
    out: &mut [f32],
) {
    let q = t.q;
    let cols = q.cols();
    let main = cols / GROUP * GROUP;
    // SAFETY: a table has 16 values.
    let load = |r: usize| unsafe { _mm512_loadu_ps(q.row_table(r).as_ptr()) };
    // One register for a shared table, one per row for row tables.
    let table: [__m512; MR] = if ROWS {
        std::array::from_fn(|m| load(t.r + m))
    } else {
        [load(t.r); MR]
    };
    let codes: [*const u8; MR] = std::array::from_fn(|m| q.row_codes(t.r + m).as_ptr());
    let xp: [*const f32; NB] = std::array::from_fn(|j| x[(t.j0 + j) * cols..].as_ptr());
    let scp: [*const f32; MR] = std::array::from_fn(|m| t.scales(m).as_ptr());
    // A GEMV tile keeps two accumulators per output (even and odd elements) to hide the FMA
    // latency; a GEMM tile has enough outputs for that. All of them stay in registers: the
    // loop is flat and has no helper taking them by reference.
    let split = NB == 1;
    let mut acc_e = [[_mm512_setzero_ps(); NB]; MR];
    let mut acc_o = [[_mm512_setzero_ps(); NB]; MR];
    // A group reads 16 bytes of each of MR rows: one line of the next tile per group for MR = 4.
    let ahead = Prefetch::next_tile(q, t.r, MR);
    let block16 = q.block() == 16;
    // Block 16: two blocks per group; lanes 0-7 (even elements 0..16) use the first block's
    // table, lanes 8-15 the second's, and permutex2var picks the table with index bit 4.
    let second = _mm512_set_epi32(16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0);
    let low4 = _mm512_set1_epi32(15);
    // Otherwise the scaled table changes at each block start; a whole-row block may be any
    // length, but it is the only block.
    let per_block = if q.blocks_per_row() == 1 {
        usize::MAX
    } else {
        q.block() / GROUP
    };
    let mut tables = table;
    let (mut b, mut next) = (0, 0);
    for g in 0..main / GROUP {
        ahead.step(g, 1);
        let mut we = [_mm512_setzero_ps(); MR];
        let mut wo = [_mm512_setzero_ps(); MR];
        if block16 {
            for m in 0..MR {
                // SAFETY: group g < cols / 32 holds blocks 2g and 2g + 1 < blocks_per_row and
                // 16 code bytes of each row at 16 g.
                let (sa, sb, bytes) = unsafe {
                    (
                        *scp[m].add(2 * g),
                        *scp[m].add(2 * g + 1),
                        _mm_loadu_si128(codes[m].add(16 * g).cast()),
                    )
                };
                let ta = _mm512_mul_ps(table[m], _mm512_set1_ps(sa));
                let tb = _mm512_mul_ps(table[m], _mm512_set1_ps(sb));
                let idx = _mm512_cvtepu8_epi32(bytes);
                let ie = _mm512_or_si512(_mm512_and_si512(idx, low4), second);
                let io = _mm512_or_si512(_mm512_srli_epi32(idx, 4), second);
                we[m] = _mm512_permutex2var_ps(ta, ie, tb);
                wo[m] = _mm512_permutex2var_ps(ta, io, tb);
            }
        } else {
            if g == next {
                for m in 0..MR {
                    // SAFETY: group g lies in block b < blocks_per_row.
                    let s = unsafe { *scp[m].add(b) };
                    tables[m] = _mm512_mul_ps(table[m], _mm512_set1_ps(s));
                }
                b += 1;
                next = next.saturating_add(per_block);
            }
            for m in 0..MR {
                // SAFETY: group g < cols / 32: each row has 16 code bytes at 16 g.
                let idx =
                    _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(codes[m].add(16 * g).cast()) });
                we[m] = _mm512_permutexvar_ps(idx, tables[m]);
                wo[m] = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), tables[m]);
            }
        }
        for j in 0..NB {
            // SAFETY: activation rows hold `cols >= 32 (g + 1)` values.
            let (xe, xo) = unsafe {
                (
                    _mm512_loadu_ps(xp[j].add(g * GROUP)),
                    _mm512_loadu_ps(xp[j].add(g * GROUP + 16)),
                )
            };
            for m in 0..MR {
                acc_e[m][j] = _mm512_fmadd_ps(we[m], xe, acc_e[m][j]);
                if split {
                    acc_o[m][j] = _mm512_fmadd_ps(wo[m], xo, acc_o[m][j]);
                } else {
                    acc_e[m][j] = _mm512_fmadd_ps(wo[m], xo, acc_e[m][j]);
                }
            }
        }
    }
    for m in 0..MR {
        for j in 0..NB {
            let xr = &x[(t.j0 + j) * cols..(t.j0 + j + 1) * cols];
            let tail = scalar::tail_exact(t.tail_f32(m), &xr[main..]);
            let sum = _mm512_add_ps(acc_e[m][j], acc_o[m][j]);
            out[t.out_index(m, j)] = _mm512_reduce_add_ps(sum) + tail;
        }
    }
}

/// Columns per panel of the f32 GEMM: 4 activation rows of a panel stay in L1, all of them in L2.
const F32_PANEL: usize = 2048;

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn f32_rows_impl(w: &[f32], cols: usize, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    let rows = out.len() / n;
    out.fill(0.0);
    let mut k0 = 0;
    while k0 < cols || k0 == 0 {
        let k1 = (k0 + F32_PANEL).min(cols);
        for (r, mr, j, nb) in tiles(rows, n, F32_GEMM_TILE) {
            let p = F32Tile {
                w,
                x,
                cols,
                r: r0 + r,
                r0,
                j0: j,
                n,
                k0,
                k1,
            };
            // SAFETY: features enabled here; tile shapes are in range (tile_loop).
            unsafe { with_tile!(f32_tile, mr, nb, (&p, out)) }
        }
        if k1 >= cols {
            break;
        }
        k0 = k1;
    }
}

/// Adds the panel `k0..k1` of rows `r..r + MR` times activation rows `j0..j0 + NB` to `out`.
/// Safety: AVX-512 F; the rows exist and `k1 <= cols`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn f32_tile<const MR: usize, const NB: usize>(p: &F32Tile, out: &mut [f32]) {
    let wp: [*const f32; MR] = std::array::from_fn(|m| p.w[(p.r + m) * p.cols..].as_ptr());
    let xp: [*const f32; NB] = std::array::from_fn(|j| p.x[(p.j0 + j) * p.cols..].as_ptr());
    // A GEMV tile keeps two accumulators per output to hide the FMA latency.
    let mut acc = [[[_mm512_setzero_ps(); 2]; NB]; MR];
    let second = if NB == 1 { 1 } else { 0 };
    let mut k = p.k0;
    while k + 32 <= p.k1 {
        // SAFETY (all three): the loads touch elements k..k + 32 <= k1 <= cols.
        unsafe { f32_step::<MR, NB>(&mut acc, &wp, &xp, k, 0, !0) };
        unsafe { f32_step::<MR, NB>(&mut acc, &wp, &xp, k + 16, second, !0) };
        k += 32;
    }
    while k < p.k1 {
        let left = (p.k1 - k).min(16);
        // SAFETY: the masked loads read elements k..k + left <= k1 <= cols only.
        unsafe { f32_step::<MR, NB>(&mut acc, &wp, &xp, k, 0, ((1u32 << left) - 1) as __mmask16) };
        k += left;
    }
    for m in 0..MR {
        for j in 0..NB {
            let i = (p.r + m - p.r0) * p.n + p.j0 + j;
            out[i] += _mm512_reduce_add_ps(_mm512_add_ps(acc[m][j][0], acc[m][j][1]));
        }
    }
}

/// One 16-column step of an f32 tile, masked to `lanes` (plain loads when all are set).
/// Safety: AVX-512 F; elements `k..k + popcount(lanes)` of every row exist.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn f32_step<const MR: usize, const NB: usize>(
    acc: &mut [[[__m512; 2]; NB]; MR],
    wp: &[*const f32; MR],
    xp: &[*const f32; NB],
    k: usize,
    half: usize,
    lanes: __mmask16,
) {
    // SAFETY: see the function's contract; masked-off lanes are not read.
    let load = |p: *const f32| unsafe {
        if lanes == !0 {
            _mm512_loadu_ps(p)
        } else {
            _mm512_maskz_loadu_ps(lanes, p)
        }
    };
    // SAFETY: as above, `k` is inside every row.
    let xv: [__m512; NB] = std::array::from_fn(|j| load(unsafe { xp[j].add(k) }));
    for m in 0..MR {
        // SAFETY: as above.
        let wv = load(unsafe { wp[m].add(k) });
        for j in 0..NB {
            acc[m][j][half] = _mm512_fmadd_ps(wv, xv[j], acc[m][j][half]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;
    use tquant_formats::sample::Rng;
    use tquant_formats::{BlockQuantizer, BlockSize, Format};

    /// The `vpermb` lookup gives the `vpshufb` one's table values, so both tiles agree bit for
    /// bit (the `vpshufb` tile is checked against the reference on CPUs without VBMI, the
    /// dispatched one on every CPU by `tests/isa.rs`).
    #[test]
    fn vbmi_tile_matches_shuffle_tile_bit_for_bit() {
        if !Isa::Avx512.is_available() || !vbmi_available() {
            eprintln!("not run: this CPU lacks AVX-512 VNNI or VBMI");
            return;
        }
        let mut rng = Rng::new(0x7662_6d69);
        let mut checked = 0;
        for f in Format::all() {
            for (rows, cols, block, n) in [
                (5, 128, 32, 1),
                (9, 1408, 32, 1),
                (6, 320, 64, 3),
                (3, 256, 16, 5),
            ] {
                let w = rng.student_t_vec(rows * cols, 5.0);
                let quantizer = BlockQuantizer {
                    block: BlockSize::new(block).unwrap(),
                    scale_dtype: ScaleDtype::F16,
                };
                let m = quantizer.quantize(f.codebook(), &w, rows, cols).unwrap();
                let q = QMatrix::from_quantized(&m, f.codebook().values()).unwrap();
                if !q.simd_regular() {
                    continue;
                }
                let x = rng.normal_vec(n * cols);
                let a = FastActs::new(&x, n, cols, q.block(), true);
                let (mut plain, mut vbmi) = (vec![0.0f32; rows * n], vec![0.0f32; rows * n]);
                // SAFETY: AVX-512 VNNI and VBMI are available (checked above).
                unsafe {
                    fast_rows_with(&q, &a, n, 0, &mut plain, false);
                    fast_rows_with(&q, &a, n, 0, &mut vbmi, true);
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&plain),
                    bits(&vbmi),
                    "{f} [{rows}x{cols}] block {block} n {n}"
                );
                assert!(plain.iter().any(|&v| v != 0.0));
                checked += 1;
            }
        }
        assert!(checked >= Format::all().len(), "{checked} shapes ran");
    }
}
