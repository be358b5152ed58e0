//! q8_0-weight kernels (see `crate::int8`). Tiles of weight rows x activation rows as the other
//! kernels (`tiles`): a GEMV streams 4 weight rows at a time and prefetches the next 4, a GEMM
//! reuses each loaded weight block for several activation rows.
//!
//! - exact: 8 (AVX2) or 16 (AVX-512, masked at a ragged end) codes widened to f32, times the
//!   block's scale, FMA with f32 activations.
//! - fast, AVX2: one 32-code block per 256-bit register; `|w|` (unsigned) dotted with the int8
//!   activations carrying `w`'s sign (`vpsignb`) by `vpmaddubsw` + `vpmaddwd` (pairs of
//!   products fit i16, at most 2 x 127 x 127); the 8 int32 lanes converted and FMA'd with the
//!   product of the two scales.
//! - fast, AVX-512: two blocks per 512-bit register, the codes offset to unsigned (`w ^ 0x80`)
//!   for `vpdpbusd` and the offset taken back by starting each lane at `-128 *` its activations'
//!   sum; the scales of 16 blocks multiplied at once (`avx512_fast_tile`).

// Tiles index several small arrays (rows x activation rows) with the same loop variables.
#![allow(clippy::needless_range_loop)]
use super::{tiles, with_tile};
use crate::q8::{f16_to_f32, Q8In, Q8Matrix, Q8Rows, Q8_BLOCK};
use crate::{Isa, Mode};
use std::arch::x86_64::*;

/// GEMM tiles (weight rows, activation rows).
const AVX2_TILE: (usize, usize) = (4, 3);
const AVX512_TILE: (usize, usize) = (4, 4);

pub(crate) fn kernel(isa: Isa, mode: Mode) -> Q8Rows {
    match (isa, mode) {
        (Isa::Avx2, Mode::Exact) => avx2_exact,
        (Isa::Avx2, Mode::Fast) => avx2_fast,
        (Isa::Avx512, Mode::Exact) => avx512_exact,
        (Isa::Avx512, Mode::Fast) => avx512_fast,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

/// A tile: weight rows `r..r + MR`, activation rows `j0..j0 + NB`.
struct Tile<'a, 'q> {
    q: &'a Q8Matrix<'q>,
    a: &'a Q8In<'a>,
    /// The tile rows' scales as f32, `blocks_per_row` each.
    d: &'a [f32],
    r: usize,
    r0: usize,
    j0: usize,
    n: usize,
}

impl Tile<'_, '_> {
    fn out_index(&self, m: usize, j: usize) -> usize {
        (self.r + m - self.r0) * self.n + self.j0 + j
    }
    fn d(&self, m: usize) -> &[f32] {
        let b = self.q.blocks_per_row();
        &self.d[m * b..(m + 1) * b]
    }
    fn x(&self) -> &[f32] {
        match self.a {
            Q8In::Exact(x) => x,
            Q8In::Fast(_) => unreachable!("exact kernels take f32 activations"),
        }
    }
}

/// f16 scale bits to f32, 8 at a time. Safety: F16C.
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_scales(src: &[u16], dst: &mut [f32]) {
    let mut i = 0;
    while i + 8 <= src.len() {
        // SAFETY: 8 values at `i` exist in both slices.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for k in i..src.len() {
        dst[k] = f16_to_f32(src[k]);
    }
}

/// Runs `$tile::<MR, NB>` over every tile of rows `r0..r0 + out.len() / n`.
macro_rules! tile_loop {
    ($tile:ident, $gemm:expr, $q:expr, $a:expr, $n:expr, $r0:expr, $out:expr) => {{
        let rows = $out.len() / $n;
        let bpr = $q.blocks_per_row();
        let mut d = vec![0.0f32; 4 * bpr];
        let mut have = usize::MAX;
        for (r, mr, j, nb) in tiles(rows, $n, $gemm) {
            if have != r {
                for m in 0..mr {
                    // SAFETY: the enclosing kernel runs only where F16C is present.
                    unsafe {
                        widen_scales($q.row_scales($r0 + r + m), &mut d[m * bpr..(m + 1) * bpr])
                    };
                }
                have = r;
            }
            let t = Tile {
                q: $q,
                a: $a,
                d: &d,
                r: $r0 + r,
                r0: $r0,
                j0: j,
                n: $n,
            };
            // SAFETY: the features are enabled in the enclosing function; `tiles` keeps the
            // tile inside rows `0..rows` of `out` and activation rows `0..n`.
            unsafe { with_tile!($tile, mr, nb, (&t, $out)) }
        }
    }};
}

/// Prefetches the codes `MR` rows below `p` at column `k` (the next GEMV tile's).
#[inline(always)]
fn prefetch_next<const MR: usize>(p: *const i8, cols: usize, k: usize) {
    // SAFETY: a prefetch never faults; the address is computed without dereferencing.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(MR * cols + k)) };
}

unsafe fn avx2_exact(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    // SAFETY: the dispatcher runs this only where AVX2/FMA/F16C are present.
    unsafe { avx2_exact_impl(q, a, n, r0, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn avx2_exact_impl(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    out.fill(0.0);
    tile_loop!(avx2_exact_tile, AVX2_TILE, q, a, n, r0, out)
}

/// Safety: AVX2/FMA; the tile's rows exist.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_exact_tile<const MR: usize, const NB: usize>(t: &Tile, out: &mut [f32]) {
    let cols = t.q.cols();
    let x = t.x();
    let cp: [*const i8; MR] = std::array::from_fn(|m| t.q.row_codes(t.r + m).as_ptr());
    let xp: [*const f32; NB] = std::array::from_fn(|j| x[(t.j0 + j) * cols..].as_ptr());
    let mut acc = [[_mm256_setzero_ps(); NB]; MR];
    let mut tail = [[0.0f32; NB]; MR];
    for b in 0..t.q.blocks_per_row() {
        let k0 = b * Q8_BLOCK;
        let k1 = (k0 + Q8_BLOCK).min(cols);
        if NB == 1 && b % 2 == 0 {
            for m in 0..MR {
                prefetch_next::<MR>(cp[m], cols, k0);
            }
        }
        let dv: [__m256; MR] = std::array::from_fn(|m| _mm256_set1_ps(t.d(m)[b]));
        let mut k = k0;
        while k + 8 <= k1 {
            // SAFETY: columns k..k + 8 <= cols of every row exist.
            unsafe {
                let xv: [__m256; NB] = std::array::from_fn(|j| _mm256_loadu_ps(xp[j].add(k)));
                for m in 0..MR {
                    let c = _mm_loadl_epi64(cp[m].add(k).cast());
                    let w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)), dv[m]);
                    for j in 0..NB {
                        acc[m][j] = _mm256_fmadd_ps(w, xv[j], acc[m][j]);
                    }
                }
            }
            k += 8;
        }
        for c in k..k1 {
            for m in 0..MR {
                // SAFETY: column c < cols of every row exists.
                let w = unsafe { *cp[m].add(c) } as f32 * t.d(m)[b];
                for j in 0..NB {
                    tail[m][j] += w * unsafe { *xp[j].add(c) };
                }
            }
        }
    }
    for m in 0..MR {
        for j in 0..NB {
            out[t.out_index(m, j)] += hsum256(acc[m][j]) + tail[m][j];
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

unsafe fn avx512_exact(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    // SAFETY: the dispatcher runs this only where AVX-512 F/BW/VL and F16C are present.
    unsafe { avx512_exact_impl(q, a, n, r0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn avx512_exact_impl(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    out.fill(0.0);
    tile_loop!(avx512_exact_tile, AVX512_TILE, q, a, n, r0, out)
}

/// Safety: AVX-512 F/BW/VL; the tile's rows exist.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn avx512_exact_tile<const MR: usize, const NB: usize>(t: &Tile, out: &mut [f32]) {
    let cols = t.q.cols();
    let x = t.x();
    let cp: [*const i8; MR] = std::array::from_fn(|m| t.q.row_codes(t.r + m).as_ptr());
    let xp: [*const f32; NB] = std::array::from_fn(|j| x[(t.j0 + j) * cols..].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); NB]; MR];
    for b in 0..t.q.blocks_per_row() {
        let k0 = b * Q8_BLOCK;
        let len = (cols - k0).min(Q8_BLOCK);
        if NB == 1 && b % 2 == 0 {
            for m in 0..MR {
                prefetch_next::<MR>(cp[m], cols, k0);
            }
        }
        let dv: [__m512; MR] = std::array::from_fn(|m| _mm512_set1_ps(t.d(m)[b]));
        for half in 0..2 {
            let lanes = len.saturating_sub(16 * half).min(16);
            if lanes == 0 {
                break;
            }
            let mask = (((1u32 << lanes) - 1) & 0xffff) as __mmask16;
            let k = k0 + 16 * half;
            // SAFETY: masked loads read only columns k..k + lanes <= cols of every row.
            unsafe {
                let xv: [__m512; NB] =
                    std::array::from_fn(|j| _mm512_maskz_loadu_ps(mask, xp[j].add(k)));
                for m in 0..MR {
                    let c = _mm_maskz_loadu_epi8(mask, cp[m].add(k));
                    let w = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c)), dv[m]);
                    for j in 0..NB {
                        acc[m][j] = _mm512_fmadd_ps(w, xv[j], acc[m][j]);
                    }
                }
            }
        }
    }
    for m in 0..MR {
        for j in 0..NB {
            out[t.out_index(m, j)] += _mm512_reduce_add_ps(acc[m][j]);
        }
    }
}

/// The fast kernels: `$dot(|w|, x with w's sign)` gives 8 int32 lanes per 32-code block.
macro_rules! fast_kernel {
    ($entry:ident, $imp:ident, $tile:ident, $gemm:expr, $features:literal, $load:ident, $dot:ident) => {
        unsafe fn $entry(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
            // SAFETY: the dispatcher runs this only where the features are present.
            unsafe { $imp(q, a, n, r0, out) }
        }

        #[target_feature(enable = $features)]
        fn $imp(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
            out.fill(0.0);
            tile_loop!($tile, $gemm, q, a, n, r0, out)
        }

        /// Safety: the features; the tile's rows exist.
        #[target_feature(enable = $features)]
        unsafe fn $tile<const MR: usize, const NB: usize>(t: &Tile, out: &mut [f32]) {
            let Q8In::Fast(acts) = t.a else {
                unreachable!("fast kernels take int8 activations")
            };
            let cols = t.q.cols();
            let cp: [*const i8; MR] = std::array::from_fn(|m| t.q.row_codes(t.r + m).as_ptr());
            let mut acc = [[_mm256_setzero_ps(); NB]; MR];
            for b in 0..t.q.blocks_per_row() {
                let k0 = b * Q8_BLOCK;
                let len = (cols - k0).min(Q8_BLOCK);
                if NB == 1 && b % 2 == 0 {
                    for m in 0..MR {
                        prefetch_next::<MR>(cp[m], cols, k0);
                    }
                }
                let xs: [(&[i8], f32); NB] = std::array::from_fn(|j| acts.block(t.j0 + j, b));
                // SAFETY: each activation block holds 32 codes (zero past `cols`).
                let xv: [__m256i; NB] =
                    std::array::from_fn(|j| unsafe { _mm256_loadu_si256(xs[j].0.as_ptr().cast()) });
                for m in 0..MR {
                    // SAFETY: columns k0..k0 + len <= cols of row m exist.
                    let w = unsafe { $load(cp[m].add(k0), len) };
                    let aw = _mm256_sign_epi8(w, w);
                    let dw = t.d(m)[b];
                    for j in 0..NB {
                        let sx = _mm256_sign_epi8(xv[j], w);
                        let dot = $dot(aw, sx);
                        let s = _mm256_set1_ps(dw * xs[j].1);
                        acc[m][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), s, acc[m][j]);
                    }
                }
            }
            for m in 0..MR {
                for j in 0..NB {
                    out[t.out_index(m, j)] += hsum256(acc[m][j]);
                }
            }
        }
    };
}

/// 32 codes at `p`, `len` of them valid (the rest zero). Safety: AVX2; `len` readable at `p`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_avx2(p: *const i8, len: usize) -> __m256i {
    if len == Q8_BLOCK {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_si256(p.cast()) }
    } else {
        let mut buf = [0i8; Q8_BLOCK];
        // SAFETY: the caller's contract.
        unsafe {
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), len);
            _mm256_loadu_si256(buf.as_ptr().cast())
        }
    }
}

#[target_feature(enable = "avx2")]
#[inline]
fn dot_avx2(aw: __m256i, sx: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
}

fast_kernel!(
    avx2_fast,
    avx2_fast_impl,
    avx2_fast_tile,
    AVX2_TILE,
    "avx2,fma,f16c",
    load_avx2,
    dot_avx2
);

unsafe fn avx512_fast(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    // SAFETY: the dispatcher runs this only where AVX-512 F/BW/VL/VNNI and F16C are present.
    unsafe { avx512_fast_impl(q, a, n, r0, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn avx512_fast_impl(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    out.fill(0.0);
    tile_loop!(avx512_fast_tile, AVX512_TILE, q, a, n, r0, out)
}

/// Blocks whose combined scales one 16-lane vector holds.
const SCALE_GROUP: usize = 16;

/// The fast AVX-512 tile, two 32-code blocks (64 bytes) per step: `vpdpbusd` takes the codes
/// as unsigned bytes `w + 128` (`w ^ 0x80`), and each int32 lane starts at `-128 *` the sum of
/// its 4 activations (one `vpdpbusd` per activation chunk, shared by the tile's rows), so it
/// ends at the signed dot exactly. Lanes 0-7 hold the even block, 8-15 the odd one; the
/// weight and activation scales of 16 blocks are multiplied once, and each step picks its two
/// by `vpermps`. Per 64 codes and row: a load, an xor, a `vpdpbusd`, a convert, a permute and
/// an FMA.
///
/// Safety: AVX-512 F/BW/VL/VNNI; the tile's rows exist.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn avx512_fast_tile<const MR: usize, const NB: usize>(t: &Tile, out: &mut [f32]) {
    let Q8In::Fast(acts) = t.a else {
        unreachable!("fast kernels take int8 activations")
    };
    let (cols, bpr) = (t.q.cols(), t.q.blocks_per_row());
    // Activation bytes per row: whole blocks, zero past `cols`.
    let span = bpr * Q8_BLOCK;
    let steps = bpr.div_ceil(2);
    let full = cols / 64;
    let cp: [*const i8; MR] = std::array::from_fn(|m| t.q.row_codes(t.r + m).as_ptr());
    let xp: [*const i8; NB] = std::array::from_fn(|j| acts.codes[(t.j0 + j) * span..].as_ptr());
    let dxp: [*const f32; NB] = std::array::from_fn(|j| acts.scales[(t.j0 + j) * bpr..].as_ptr());
    let dwp: [*const f32; MR] = std::array::from_fn(|m| t.d(m).as_ptr());
    let flip = _mm512_set1_epi8(-128);
    // Lanes 0-7 pick block 0 of a pair, lanes 8-15 block 1.
    let pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); NB]; MR];
    let mut s = 0;
    while s < steps {
        let b0 = 2 * s;
        let nbk = (bpr - b0).min(SCALE_GROUP);
        let smask = ((1u32 << nbk) - 1) as __mmask16;
        // SAFETY: blocks b0..b0 + nbk of every scale row exist (masked loads).
        let sv: [[__m512; NB]; MR] = unsafe {
            std::array::from_fn(|m| {
                let dw = _mm512_maskz_loadu_ps(smask, dwp[m].add(b0));
                std::array::from_fn(|j| {
                    _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(smask, dxp[j].add(b0)))
                })
            })
        };
        let end = (s + SCALE_GROUP / 2).min(steps);
        let mut idx = pair;
        for c in s..end {
            let k0 = 64 * c;
            if NB == 1 {
                for m in 0..MR {
                    prefetch_next::<MR>(cp[m], cols, k0);
                }
            }
            // SAFETY: a whole step (c < full) has 64 codes in every row and 64 activation
            // bytes (span >= cols); the last one is masked to the row's codes and the
            // activation row's bytes.
            unsafe {
                let (wmask, xmask) = if c < full {
                    (!0u64, !0u64)
                } else {
                    let keep = |len: usize| if len >= 64 { !0u64 } else { (1u64 << len) - 1 };
                    (keep(cols - k0), keep(span - k0))
                };
                let xv: [__m512i; NB] =
                    std::array::from_fn(|j| _mm512_maskz_loadu_epi8(xmask, xp[j].add(k0)));
                let ncorr: [__m512i; NB] = std::array::from_fn(|j| {
                    let c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), flip, xv[j]);
                    _mm512_sub_epi32(_mm512_setzero_si512(), c)
                });
                for m in 0..MR {
                    let w = _mm512_maskz_loadu_epi8(wmask, cp[m].add(k0));
                    let uw = _mm512_xor_si512(w, flip);
                    for j in 0..NB {
                        let dot = _mm512_dpbusd_epi32(ncorr[j], uw, xv[j]);
                        let sc = _mm512_permutexvar_ps(idx, sv[m][j]);
                        acc[m][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[m][j]);
                    }
                }
            }
            idx = _mm512_add_epi32(idx, _mm512_set1_epi32(2));
        }
        s = end;
    }
    for m in 0..MR {
        for j in 0..NB {
            out[t.out_index(m, j)] += _mm512_reduce_add_ps(acc[m][j]);
        }
    }
}
