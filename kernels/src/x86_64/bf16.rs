//! 16-bit float weight kernels: AVX2 and AVX-512 widen 8 / 16 weights at a time to f32 and FMA
//! them with f32 activations. bf16 widens by a zero-extend to 32 bits and a shift left 16; f16 by
//! `vcvtph2ps` (F16C on AVX2, AVX-512F at 16 lanes), which is exact, subnormals included. Each
//! kernel is generic over `F16` (false: bf16), so one loop nest serves both encodings. AVX512-BF16
//! dots 32 bf16 weights
//! with 32 bf16 activations per `vdpbf16ps` (fast mode). Tiles of weight rows x activation rows
//! as in the f32 kernels: a GEMV streams 4 weight rows at a time, a GEMM reuses each widened
//! weight vector for several activation rows.

// Tiles index several small arrays (rows x activation rows) with the same loop variables.
#![allow(clippy::needless_range_loop)]
use super::{tiles, with_tile};
use crate::isa::Bf16Acts;
use crate::widen::{bf16_to_f32, f16_to_f32};
use std::arch::x86_64::*;

/// GEMM tiles (weight rows, activation rows).
const AVX2_TILE: (usize, usize) = (4, 3);
const AVX512_TILE: (usize, usize) = (4, 4);

/// A tile: weight rows `r..r + MR`, activation rows `j0..j0 + NB`, all columns.
struct Tile<'a, X> {
    w: &'a [u16],
    x: &'a [X],
    cols: usize,
    r: usize,
    r0: usize,
    j0: usize,
    n: usize,
}

impl<X> Tile<'_, X> {
    fn w_row(&self, m: usize) -> &[u16] {
        &self.w[(self.r + m) * self.cols..(self.r + m + 1) * self.cols]
    }
    fn x_row(&self, j: usize) -> &[X] {
        &self.x[(self.j0 + j) * self.cols..(self.j0 + j + 1) * self.cols]
    }
    fn out_index(&self, m: usize, j: usize) -> usize {
        (self.r + m - self.r0) * self.n + self.j0 + j
    }
}

/// Runs `tile::<[G,] MR, NB>` over every tile of rows `r0..r0 + out.len() / n`.
macro_rules! tile_loop {
    ($tile:ident, $gemm:expr, $w:expr, $x:expr, $cols:expr, $n:expr, $r0:expr, $out:expr) => {
        tile_loop!($tile, [], $gemm, $w, $x, $cols, $n, $r0, $out)
    };
    ($tile:ident, [$($g:ident),*], $gemm:expr, $w:expr, $x:expr, $cols:expr, $n:expr, $r0:expr,
     $out:expr) => {{
        let rows = $out.len() / $n;
        for (r, mr, j, nb) in tiles(rows, $n, $gemm) {
            let t = Tile {
                w: $w,
                x: $x,
                cols: $cols,
                r: $r0 + r,
                r0: $r0,
                j0: j,
                n: $n,
            };
            // SAFETY: the features are enabled in the enclosing function; `tiles` keeps the
            // tile inside rows `0..rows` of `out` and activation rows `0..n`.
            unsafe { with_tile!($tile, [$($g),*], mr, nb, (&t, $out)) }
        }
    }};
}

fn wide<'a>(a: &'a Bf16Acts<'_>) -> &'a [f32] {
    match a {
        Bf16Acts::Wide(x) => x,
        Bf16Acts::Bits(_) => unreachable!("widening kernels take f32 activations"),
    }
}

/// One stored weight as f32 (the scalar tails).
#[inline(always)]
fn widen1<const F16: bool>(b: u16) -> f32 {
    if F16 {
        f16_to_f32(b)
    } else {
        bf16_to_f32(b)
    }
}

/// AVX2 widening kernel (bf16, or f16 when `F16`). Safety: the CPU must have AVX2, FMA and
/// F16C; `out` holds whole rows.
pub(crate) unsafe fn avx2_rows<const F16: bool>(
    w: &[u16],
    cols: usize,
    a: &Bf16Acts,
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the CPU features.
    unsafe { avx2_rows_impl::<F16>(w, cols, wide(a), n, r0, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn avx2_rows_impl<const F16: bool>(
    w: &[u16],
    cols: usize,
    x: &[f32],
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    out.fill(0.0);
    tile_loop!(avx2_tile, [F16], AVX2_TILE, w, x, cols, n, r0, out)
}

/// 8 weights at `p` (bf16, or f16 when `F16`) as f32. Safety: AVX2 and F16C; 8 values readable
/// at `p`.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn widen8<const F16: bool>(p: *const u16) -> __m256 {
    // SAFETY: the caller's contract.
    let h = unsafe { _mm_loadu_si128(p.cast()) };
    if F16 {
        _mm256_cvtph_ps(h)
    } else {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }
}

/// Safety: AVX2/FMA/F16C; the tile's rows exist.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_tile<const F16: bool, const MR: usize, const NB: usize>(
    t: &Tile<f32>,
    out: &mut [f32],
) {
    let wr: [&[u16]; MR] = std::array::from_fn(|m| t.w_row(m));
    let xr: [&[f32]; NB] = std::array::from_fn(|j| t.x_row(j));
    // A GEMV tile keeps two accumulators per output to hide the FMA latency.
    let mut acc = [[[_mm256_setzero_ps(); 2]; NB]; MR];
    let second = if NB == 1 { 1 } else { 0 };
    let mut k = 0;
    while k + 16 <= t.cols {
        for half in 0..2 {
            let kk = k + 8 * half;
            let h = half * second;
            // SAFETY: elements kk..kk + 8 <= cols of every row exist.
            unsafe {
                let xv: [__m256; NB] =
                    std::array::from_fn(|j| _mm256_loadu_ps(xr[j].as_ptr().add(kk)));
                for m in 0..MR {
                    let wv = widen8::<F16>(wr[m].as_ptr().add(kk));
                    for j in 0..NB {
                        acc[m][j][h] = _mm256_fmadd_ps(wv, xv[j], acc[m][j][h]);
                    }
                }
            }
        }
        k += 16;
    }
    for m in 0..MR {
        for j in 0..NB {
            let tail: f32 = (k..t.cols)
                .map(|c| widen1::<F16>(wr[m][c]) * xr[j][c])
                .sum();
            out[t.out_index(m, j)] += hsum256(_mm256_add_ps(acc[m][j][0], acc[m][j][1])) + tail;
        }
    }
}

#[target_feature(enable = "avx2")]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// AVX-512F widening kernel (bf16, or f16 when `F16`). Safety: the CPU must have AVX-512
/// F/BW/VL; `out` holds whole rows.
pub(crate) unsafe fn avx512_rows<const F16: bool>(
    w: &[u16],
    cols: usize,
    a: &Bf16Acts,
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    // SAFETY: the caller checked the CPU features.
    unsafe { avx512_rows_impl::<F16>(w, cols, wide(a), n, r0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn avx512_rows_impl<const F16: bool>(
    w: &[u16],
    cols: usize,
    x: &[f32],
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    out.fill(0.0);
    tile_loop!(avx512_tile, [F16], AVX512_TILE, w, x, cols, n, r0, out)
}

/// Safety: AVX-512 F/BW/VL; the tile's rows exist.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn avx512_tile<const F16: bool, const MR: usize, const NB: usize>(
    t: &Tile<f32>,
    out: &mut [f32],
) {
    let wp: [*const u16; MR] = std::array::from_fn(|m| t.w_row(m).as_ptr());
    let xp: [*const f32; NB] = std::array::from_fn(|j| t.x_row(j).as_ptr());
    let mut acc = [[[_mm512_setzero_ps(); 2]; NB]; MR];
    let second = if NB == 1 { 1 } else { 0 };
    // One 16-column step, masked to `lanes`; masked-off lanes are not read.
    let step = |acc: &mut [[[__m512; 2]; NB]; MR], k: usize, h: usize, lanes: __mmask16| {
        // SAFETY: columns k..k + popcount(lanes) of every row exist (the callers below).
        unsafe {
            let xv: [__m512; NB] =
                std::array::from_fn(|j| _mm512_maskz_loadu_ps(lanes, xp[j].add(k)));
            for m in 0..MR {
                let h16 = _mm256_maskz_loadu_epi16(lanes, wp[m].add(k).cast());
                let wv = if F16 {
                    _mm512_cvtph_ps(h16)
                } else {
                    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h16), 16))
                };
                for j in 0..NB {
                    acc[m][j][h] = _mm512_fmadd_ps(wv, xv[j], acc[m][j][h]);
                }
            }
        }
    };
    let mut k = 0;
    while k + 32 <= t.cols {
        step(&mut acc, k, 0, !0);
        step(&mut acc, k + 16, second, !0);
        k += 32;
    }
    while k < t.cols {
        let left = (t.cols - k).min(16);
        step(&mut acc, k, 0, ((1u32 << left) - 1) as __mmask16);
        k += left;
    }
    for m in 0..MR {
        for j in 0..NB {
            out[t.out_index(m, j)] +=
                _mm512_reduce_add_ps(_mm512_add_ps(acc[m][j][0], acc[m][j][1]));
        }
    }
}

/// AVX512-BF16 kernel (fast mode). Safety: the CPU must have AVX-512 F/BW/VL and BF16; `out`
/// holds whole rows.
pub(crate) unsafe fn dot_rows(
    w: &[u16],
    cols: usize,
    a: &Bf16Acts,
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    let Bf16Acts::Bits(x) = a else {
        unreachable!("the vdpbf16ps kernel takes bf16 activations")
    };
    // SAFETY: the caller checked the CPU features.
    unsafe { dot_rows_impl(w, cols, x, n, r0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
fn dot_rows_impl(w: &[u16], cols: usize, x: &[u16], n: usize, r0: usize, out: &mut [f32]) {
    out.fill(0.0);
    tile_loop!(dot_tile, AVX512_TILE, w, x, cols, n, r0, out)
}

/// Safety: AVX-512 F/BW/VL/BF16; the tile's rows exist.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn dot_tile<const MR: usize, const NB: usize>(t: &Tile<u16>, out: &mut [f32]) {
    let wp: [*const u16; MR] = std::array::from_fn(|m| t.w_row(m).as_ptr());
    let xp: [*const u16; NB] = std::array::from_fn(|j| t.x_row(j).as_ptr());
    let mut acc = [[[_mm512_setzero_ps(); 2]; NB]; MR];
    let second = if NB == 1 { 1 } else { 0 };
    // One 32-column step, masked to `lanes`; masked-off lanes are zero and not read.
    let step = |acc: &mut [[[__m512; 2]; NB]; MR], k: usize, h: usize, lanes: __mmask32| {
        // SAFETY: columns k..k + popcount(lanes) of every row exist (the callers below);
        // `__m512i` and `__m512bh` are the same 512 bits.
        unsafe {
            let xv: [__m512bh; NB] = std::array::from_fn(|j| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(
                    lanes,
                    xp[j].add(k).cast(),
                ))
            });
            for m in 0..MR {
                let wv = std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(
                    lanes,
                    wp[m].add(k).cast(),
                ));
                for j in 0..NB {
                    acc[m][j][h] = _mm512_dpbf16_ps(acc[m][j][h], wv, xv[j]);
                }
            }
        }
    };
    let mut k = 0;
    while k + 64 <= t.cols {
        step(&mut acc, k, 0, !0);
        step(&mut acc, k + 32, second, !0);
        k += 64;
    }
    while k < t.cols {
        let left = (t.cols - k).min(32);
        let lanes = if left == 32 { !0 } else { (1u32 << left) - 1 };
        step(&mut acc, k, 0, lanes);
        k += left;
    }
    for m in 0..MR {
        for j in 0..NB {
            out[t.out_index(m, j)] +=
                _mm512_reduce_add_ps(_mm512_add_ps(acc[m][j][0], acc[m][j][1]));
        }
    }
}
