//! AVX2 + FMA + F16C kernels (the same structure as `avx512`, in 256-bit vectors).
//!
//! - fast: the int8 table in each 128-bit lane for `vpshufb`; without VNNI the int8 dot is
//!   ggml's `vpmaddubsw(|w|, sign(x, w))` + `vpmaddwd(.., 1)` (no saturation: `|w|, |x| <= 127`).
//! - exact: a 16-entry f32 table does not fit one ymm: two `vpermps` over its halves and a
//!   `vblendvps` on code bit 3.

// Tiles index several small arrays (rows x activation rows) with the same loop variables.
#![allow(clippy::needless_range_loop)]
use super::{padded_codes, tiles, with_tile, F32Tile, Prefetch, Tile, PER_ROW, SHARED};
use crate::act::{Chunk, FastActs, CHUNK, GROUP};
use crate::isa::Acts;
use crate::{scalar, QMatrix, ScaleDtype};
use std::arch::x86_64::*;

/// GEMM tiles (weight rows, activation rows) of each kernel.
const FAST_GEMM_TILE: (usize, usize) = (2, 4);
const EXACT_GEMM_TILE: (usize, usize) = (2, 4);
const F32_GEMM_TILE: (usize, usize) = (4, 3);

/// The fast kernel. Safety: the CPU must have AVX2, FMA and F16C; `out` holds whole rows.
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

/// Converts the scales of row `r` to f32 into `out[..blocks]`, 8 at a time; the last group of
/// a row whose block count is not a multiple of 8 is converted from a zero-padded copy (a
/// scalar tail costs as much as the row's products on short rows).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn row_scales(q: &QMatrix, r: usize, out: &mut [f32]) {
    let bytes = q.row_scales(r);
    let nb = q.blocks_per_row();
    let size = q.scale_dtype().size();
    let mut b = 0;
    while b + 8 <= nb {
        // SAFETY: blocks b..b + 8 exist, so the row holds (b + 8) * size bytes from there.
        let v = unsafe { scales8(q.scale_dtype(), &bytes[b * size..]) };
        // SAFETY: `out` has room for `blocks_per_row` values.
        unsafe { _mm256_storeu_ps(out[b..b + 8].as_mut_ptr(), v) };
        b += 8;
    }
    if b < nb {
        let mut pad = [0u8; 32];
        let rest = &bytes[b * size..nb * size];
        pad[..rest.len()].copy_from_slice(rest);
        // SAFETY: `pad` holds 8 scales of any dtype (at most 4 bytes each).
        let v = unsafe { scales8(q.scale_dtype(), &pad) };
        let mut t = [0.0f32; 8];
        // SAFETY: `t` holds 8 floats.
        unsafe { _mm256_storeu_ps(t.as_mut_ptr(), v) };
        out[b..nb].copy_from_slice(&t[..nb - b]);
    }
}

/// 8 scales of `dtype` from the start of `bytes` as f32. Safety: AVX2/F16C; `bytes` holds 8
/// scales.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn scales8(dtype: ScaleDtype, bytes: &[u8]) -> __m256 {
    let p = bytes.as_ptr();
    // SAFETY (all loads): the caller's contract, 8 scales at `p`.
    match dtype {
        ScaleDtype::F32 => unsafe { _mm256_loadu_ps(p.cast()) },
        ScaleDtype::F16 => _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) }),
        ScaleDtype::Bf16 => {
            let h = unsafe { _mm_loadu_si128(p.cast()) };
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        }
        ScaleDtype::E4m3 => {
            // One byte each, decoded by table lookup (no SIMD conversion needed).
            let t: [f32; 8] = std::array::from_fn(|i| dtype.read(bytes, i));
            // SAFETY: `t` holds 8 floats.
            unsafe { _mm256_loadu_ps(t.as_ptr()) }
        }
        ScaleDtype::E8m0 => {
            let e = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.cast()) });
            let v = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
            // Byte 0 is 2^-127 (a subnormal), byte 255 NaN (OCP MX).
            let zero = _mm256_castsi256_ps(_mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
            let nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(e, _mm256_set1_epi32(255)));
            let v = _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(1 << 22)), zero);
            _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc0_0000)), nan)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn fast_rows_impl(q: &QMatrix, a: &FastActs, n: usize, r0: usize, out: &mut [f32]) {
    let rows = out.len() / n;
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
        // SAFETY: features enabled here; tile shapes are in range (tiles).
        unsafe {
            if q.has_row_tables() {
                with_tile!(fast_tile, [PER_ROW], mr, nb, (&t, a, out))
            } else {
                with_tile!(fast_tile, [SHARED], mr, nb, (&t, a, out))
            }
        }
    }
}

/// Safety: AVX2/FMA; rows `t.r..t.r + MR` and activation rows `t.j0..t.j0 + NB` exist; `a`
/// has the chunk order over `a.main` elements; `t.sc` holds MR rows of padded scales.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fast_tile<const ROWS: bool, const MR: usize, const NB: usize>(
    t: &Tile,
    a: &FastActs,
    out: &mut [f32],
) {
    let q = t.q;
    let mask = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: an int8 table is 16 bytes.
    let load = |r: usize| {
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(q.row_table_i8(r).as_ptr().cast()) })
    };
    // One register for a shared table, one per row for row tables.
    let tbl: [__m256i; MR] = if ROWS {
        std::array::from_fn(|m| load(t.r + m))
    } else {
        [load(t.r); MR]
    };
    let codes: [*const u8; MR] = std::array::from_fn(|m| q.row_codes(t.r + m).as_ptr());
    // A row that ends inside its last chunk: that chunk's codes, zero-padded (the activations
    // there are zero).
    let full = q.cols() / CHUNK;
    let last: [[u8; CHUNK / 2]; MR] = std::array::from_fn(|m| padded_codes(q, t.r + m, full));
    let scp: [*const f32; MR] = std::array::from_fn(|m| t.sc[m * t.stride..].as_ptr());
    let xc: [*const Chunk; NB] = std::array::from_fn(|j| a.row_chunks(t.j0 + j).as_ptr());
    let mut acc = [[_mm256_setzero_ps(); NB]; MR];
    let ahead = Prefetch::next_tile(q, t.r, MR);
    for h in 0..a.main / (CHUNK / 2) {
        // Half a chunk reads 32 bytes of each row: one line of the next tile per row pair.
        ahead.step(h, MR.div_ceil(2));
        let (c, half) = (h / 2, h % 2);
        let base = a.half_block[h];
        // SAFETY: half chunk h < main / 64: each code row has >= 32 (h + 1) bytes, each
        // activation row c + 1 chunks (64-byte aligned); the lane block indices are < 8 and
        // `base + 8 <= blocks + 16`, inside the padded scale rows.
        unsafe {
            let idx = _mm256_loadu_si256(a.lane_block8.as_ptr().add(8 * h).cast());
            let mut wlo = [_mm256_setzero_si256(); MR];
            let mut whi = [_mm256_setzero_si256(); MR];
            let mut ws = [_mm256_setzero_ps(); MR];
            for m in 0..MR {
                let src = if c < full {
                    codes[m].add(32 * h)
                } else {
                    last[m].as_ptr().add(32 * half)
                };
                let v = _mm256_loadu_si256(src.cast());
                let lo = _mm256_and_si256(v, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                wlo[m] = _mm256_shuffle_epi8(tbl[m], lo);
                whi[m] = _mm256_shuffle_epi8(tbl[m], hi);
                ws[m] = _mm256_permutevar8x32_ps(_mm256_loadu_ps(scp[m].add(base)), idx);
            }
            let alo: [__m256i; MR] = std::array::from_fn(|m| _mm256_abs_epi8(wlo[m]));
            let ahi: [__m256i; MR] = std::array::from_fn(|m| _mm256_abs_epi8(whi[m]));
            for j in 0..NB {
                let ch = &*xc[j].add(c);
                let xl = _mm256_load_si256(ch.even.as_ptr().add(32 * half).cast());
                let xh = _mm256_load_si256(ch.odd.as_ptr().add(32 * half).cast());
                let s = _mm256_load_ps(ch.scale.as_ptr().add(8 * half));
                for m in 0..MR {
                    let pl = _mm256_maddubs_epi16(alo[m], _mm256_sign_epi8(xl, wlo[m]));
                    let ph = _mm256_maddubs_epi16(ahi[m], _mm256_sign_epi8(xh, whi[m]));
                    let d =
                        _mm256_add_epi32(_mm256_madd_epi16(pl, ones), _mm256_madd_epi16(ph, ones));
                    let f = _mm256_cvtepi32_ps(d);
                    acc[m][j] = _mm256_fmadd_ps(f, _mm256_mul_ps(s, ws[m]), acc[m][j]);
                }
            }
        }
    }
    for m in 0..MR {
        for j in 0..NB {
            out[t.out_index(m, j)] = hsum(acc[m][j]) * q.row_table_step(t.r + m);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
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
        // SAFETY: features enabled here; tile shapes are in range (tiles).
        unsafe {
            if q.has_row_tables() {
                with_tile!(exact_tile, [PER_ROW], mr, nb, (&t, x, out))
            } else {
                with_tile!(exact_tile, [SHARED], mr, nb, (&t, x, out))
            }
        }
    }
}

/// Decodes 8 codes (the low nibble of each 32-bit lane of `idx`) with a table split in halves.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn decode8(lo: __m256, hi: __m256, idx: __m256i) -> __m256 {
    let a = _mm256_permutevar8x32_ps(lo, idx);
    let b = _mm256_permutevar8x32_ps(hi, idx);
    _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)))
}

/// Safety: AVX2/FMA; rows and activation rows of the tile exist; `x` is in the exact group
/// order over `cols / 32 * 32` elements of each row; the shape is SIMD-regular.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_tile<const ROWS: bool, const MR: usize, const NB: usize>(
    t: &Tile,
    x: &[f32],
    out: &mut [f32],
) {
    let q = t.q;
    let cols = q.cols();
    let main = cols / GROUP * GROUP;
    // SAFETY: a table has 16 values.
    let load = |r: usize| unsafe {
        let p = q.row_table(r).as_ptr();
        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    };
    // The halves of one shared table, or of each row's table.
    let halves: [(__m256, __m256); MR] = if ROWS {
        std::array::from_fn(|m| load(t.r + m))
    } else {
        [load(t.r); MR]
    };
    let codes: [*const u8; MR] = std::array::from_fn(|m| q.row_codes(t.r + m).as_ptr());
    let xp: [*const f32; NB] = std::array::from_fn(|j| x[(t.j0 + j) * cols..].as_ptr());
    let mut acc = [[[_mm256_setzero_ps(); 2]; NB]; MR];
    // Each half group (8 code bytes, 16 elements) lies in one block (block 16 or >= 32).
    let mut tables: [[(__m256, __m256); 2]; MR] = std::array::from_fn(|m| [halves[m]; 2]);
    let mut table_block = [usize::MAX; 2];
    let ahead = Prefetch::next_tile(q, t.r, MR);
    for g in 0..main / GROUP {
        ahead.step(g, 1);
        for (u, tb) in table_block.iter_mut().enumerate() {
            let b = (g * GROUP + 16 * u) / q.block();
            if b != *tb {
                *tb = b;
                for (m, tm) in tables.iter_mut().enumerate() {
                    let s = _mm256_set1_ps(t.scales(m)[b]);
                    let (tlo, thi) = halves[m];
                    tm[u] = (_mm256_mul_ps(tlo, s), _mm256_mul_ps(thi, s));
                }
            }
        }
        let mut w = [[_mm256_setzero_ps(); 4]; MR];
        for m in 0..MR {
            for u in 0..2 {
                // SAFETY: group g < cols / 32, so the row has >= 16 (g + 1) code bytes.
                let bytes = unsafe { _mm_loadl_epi64(codes[m].add(g * 16 + 8 * u).cast()) };
                let idx = _mm256_cvtepu8_epi32(bytes);
                let (lo, hi) = tables[m][u];
                w[m][u] = decode8(lo, hi, idx);
                w[m][2 + u] = decode8(lo, hi, _mm256_srli_epi32(idx, 4));
            }
        }
        for j in 0..NB {
            // SAFETY: activation rows hold `cols >= 32 (g + 1)` values.
            let xv: [__m256; 4] =
                std::array::from_fn(|k| unsafe { _mm256_loadu_ps(xp[j].add(g * GROUP + 8 * k)) });
            for m in 0..MR {
                let e = _mm256_fmadd_ps(w[m][0], xv[0], acc[m][j][0]);
                acc[m][j][0] = _mm256_fmadd_ps(w[m][1], xv[1], e);
                let o = _mm256_fmadd_ps(w[m][2], xv[2], acc[m][j][1]);
                acc[m][j][1] = _mm256_fmadd_ps(w[m][3], xv[3], o);
            }
        }
    }
    for m in 0..MR {
        for j in 0..NB {
            let xr = &x[(t.j0 + j) * cols..(t.j0 + j + 1) * cols];
            let tail = scalar::tail_exact(t.tail_f32(m), &xr[main..]);
            out[t.out_index(m, j)] = hsum(_mm256_add_ps(acc[m][j][0], acc[m][j][1])) + tail;
        }
    }
}

/// Columns per panel of the f32 GEMM.
const F32_PANEL: usize = 2048;

#[target_feature(enable = "avx2,fma,f16c")]
fn f32_rows_impl(w: &[f32], cols: usize, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    let rows = out.len() / n;
    out.fill(0.0);
    let mut k0 = 0;
    loop {
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
            // SAFETY: features enabled here; tile shapes are in range (tiles).
            unsafe { with_tile!(f32_tile, mr, nb, (&p, out)) }
        }
        if k1 >= cols {
            break;
        }
        k0 = k1;
    }
}

/// Adds the panel `k0..k1` of rows `r..r + MR` times activation rows `j0..j0 + NB` to `out`.
/// Safety: AVX2/FMA; the rows exist and `k1 <= cols`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_tile<const MR: usize, const NB: usize>(p: &F32Tile, out: &mut [f32]) {
    let wr: [&[f32]; MR] =
        std::array::from_fn(|m| &p.w[(p.r + m) * p.cols..(p.r + m + 1) * p.cols]);
    let xr: [&[f32]; NB] =
        std::array::from_fn(|j| &p.x[(p.j0 + j) * p.cols..(p.j0 + j + 1) * p.cols]);
    // A GEMV tile keeps two accumulators per output to hide the FMA latency.
    let mut acc = [[[_mm256_setzero_ps(); 2]; NB]; MR];
    let second = if NB == 1 { 1 } else { 0 };
    let mut k = p.k0;
    while k + 16 <= p.k1 {
        for half in 0..2 {
            let kk = k + 8 * half;
            let a = half * second;
            // SAFETY: elements kk..kk + 8 <= k1 <= cols of every row exist.
            unsafe {
                let xv: [__m256; NB] =
                    std::array::from_fn(|j| _mm256_loadu_ps(xr[j].as_ptr().add(kk)));
                for m in 0..MR {
                    let wv = _mm256_loadu_ps(wr[m].as_ptr().add(kk));
                    for j in 0..NB {
                        acc[m][j][a] = _mm256_fmadd_ps(wv, xv[j], acc[m][j][a]);
                    }
                }
            }
        }
        k += 16;
    }
    for m in 0..MR {
        for j in 0..NB {
            let i = (p.r + m - p.r0) * p.n + p.j0 + j;
            let tail: f32 = (k..p.k1).map(|c| wr[m][c] * xr[j][c]).sum();
            out[i] += hsum(_mm256_add_ps(acc[m][j][0], acc[m][j][1])) + tail;
        }
    }
}
