//! The candidate-scale screen of `tquant_formats::screen` in AVX-512 and AVX2: the portable
//! `screen_portable` with its per-element code stepping done 16 (8) lanes at a time.
//!
//! - Per magnitude, the boundaries are computed in f64 lanes (`m_j * a` is exact there),
//!   rounded to f32 and moved up by one ulp where the strict comparison needs it, exactly as
//!   `tquant_formats::screen::boundary`; the decoded values are `levels * a` in f32.
//! - AVX-512 works on `|z|`: a lane with `z >= 0` steps down when `|z| < B[k-1]`, one with
//!   `z < 0` steps up when `|z| < C[k] = next_up(-B[k])` (that is `z >= B[k]`). Both tables sit
//!   in one 32-entry `vpermt2ps` table indexed by `k` (+16 for negative lanes), and so do the
//!   decoded values (`-y` for negative lanes): two lookups, a compare and a masked add per
//!   16 elements and candidate.
//! - AVX2 looks up 16-entry tables with two `vpermps` and a blend, and compares `z` itself.

// Sides, vectors and magnitudes index several small arrays with the same loop variables.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;
use tquant_formats::screen::{ScreenJob, MAX_LEVELS, MAX_MAGS};

/// 16 f32 on one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Row([f32; 16]);

/// Elements per pass: their codes stay in registers across all magnitudes.
const CHUNK512: usize = 64;
const CHUNK256: usize = 32;

/// The boundaries of magnitude `a` (16 lanes, +inf past the table) in AVX-512.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn boundaries512(mids: [__m512d; 2], tie_up: __mmask16, valid: __mmask16, a: f32) -> __m512 {
    let av = _mm512_set1_pd(a as f64);
    let b = [_mm512_mul_pd(mids[0], av), _mm512_mul_pd(mids[1], av)];
    let f = [_mm512_cvtpd_ps(b[0]), _mm512_cvtpd_ps(b[1])];
    let mut bump: __mmask16 = 0;
    for h in 0..2 {
        let fd = _mm512_cvtps_pd(f[h]);
        let lt = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(fd, b[h]);
        let eq = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(fd, b[h]);
        let t = (tie_up >> (8 * h)) as __mmask8;
        bump |= ((lt | (eq & !t)) as __mmask16) << (8 * h);
    }
    let lo = _mm512_castps256_ps512(f[0]);
    let both = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castps_pd(lo),
        _mm256_castps_pd(f[1]),
    ));
    let v = next_up512(_mm512_add_ps(both, _mm512_setzero_ps()), bump);
    _mm512_mask_blend_ps(valid, _mm512_set1_ps(f32::INFINITY), v)
}

/// `next_up` of the lanes in `m` (no -0 among them): one ulp up, towards +inf.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn next_up512(v: __m512, m: __mmask16) -> __m512 {
    let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
    let bits = _mm512_castps_si512(v);
    let one = _mm512_set1_epi32(1);
    let bits = _mm512_mask_add_epi32(bits, m & !neg, bits, one);
    let bits = _mm512_mask_sub_epi32(bits, m & neg, bits, one);
    _mm512_castsi512_ps(bits)
}

/// What the boundaries of every magnitude are computed from.
#[derive(Clone, Copy)]
struct Consts512 {
    mids: [__m512d; 2],
    tie_up: __mmask16,
    valid: __mmask16,
    levels: __m512,
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn consts512(job: &ScreenJob<'_>) -> Consts512 {
    let t = job.table;
    // SAFETY: `mids` has 16 f64, read as two 8-lane vectors; `levels` has 16 f32.
    let (mids, levels) = unsafe {
        (
            [
                _mm512_loadu_pd(t.mids.as_ptr()),
                _mm512_loadu_pd(t.mids.as_ptr().add(8)),
            ],
            _mm512_loadu_ps(t.levels.as_ptr()),
        )
    };
    let tie_up = t
        .tie_up
        .iter()
        .enumerate()
        .fold(0u16, |m, (j, &u)| m | ((u as u16) << j));
    Consts512 {
        mids,
        tie_up,
        valid: ((1u32 << (t.len - 1)) - 1) as u16,
        levels,
    }
}

/// Magnitude `a`'s 32-entry step table (`B[k-1]` at `k`, `next_up(-B[k])` at `16 + k`) and
/// 32-entry decoded table (`y[k]` at `k`, `-y[k]` at `16 + k`), as two vectors each.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn tables512(c: &Consts512, a: f32) -> [__m512; 4] {
    let b = boundaries512(c.mids, c.tie_up, c.valid, a);
    let shift_up = _mm512_set_epi32(14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0);
    let zero = _mm512_setzero_ps();
    // B[k-1] at k (lane 0 unused: -inf).
    let down = _mm512_mask_blend_ps(
        1,
        _mm512_permutexvar_ps(shift_up, b),
        _mm512_set1_ps(f32::NEG_INFINITY),
    );
    let up = next_up512(_mm512_add_ps(_mm512_sub_ps(zero, b), zero), !0);
    let y = _mm512_mul_ps(c.levels, _mm512_set1_ps(a));
    [down, up, y, _mm512_sub_ps(zero, y)]
}

/// Sixteen horizontal sums at once: lane `i` of the result is the sum of `r[i]`'s lanes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn reduce16(r: &[__m512; 16]) -> __m512 {
    let mut t = [_mm512_setzero_ps(); 8];
    for j in 0..8 {
        let (a, b) = (r[2 * j], r[2 * j + 1]);
        t[j] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    let mut u = [_mm512_setzero_ps(); 4];
    for j in 0..4 {
        let (a, b) = (_mm512_castps_pd(t[2 * j]), _mm512_castps_pd(t[2 * j + 1]));
        // Pairs of f32 moved as f64, added as f32.
        u[j] = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        );
    }
    // u[j]'s 128-bit block q: rows 4j..4j+4 summed over quarter q of their lanes.
    let x01 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(u[0], u[1]),
        _mm512_shuffle_f32x4::<0xdd>(u[0], u[1]),
    );
    let x23 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(u[2], u[3]),
        _mm512_shuffle_f32x4::<0xdd>(u[2], u[3]),
    );
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(x01, x23),
        _mm512_shuffle_f32x4::<0xdd>(x01, x23),
    )
}

/// The screen in AVX-512. Safety: the CPU must have AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn screen_avx512(job: &ScreenJob<'_>, out: &mut [f32]) {
    let m = job.mags.len();
    assert!(job.table.len <= MAX_LEVELS && job.table.len >= 3);
    assert!(m <= MAX_MAGS);
    assert_eq!(out.len(), job.negate.len() * m);
    out.fill(0.0);
    if m == 0 {
        return;
    }
    // The number of sides fixed at compile time keeps every code in a register.
    match job.negate.len() {
        1 => screen512::<1>(job, out),
        2 => screen512::<2>(job, out),
        n => panic!("{n} sides"),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn screen512<const SIDES: usize>(job: &ScreenJob<'_>, out: &mut [f32]) {
    let m = job.mags.len();
    let c = consts512(job);
    let one = _mm512_set1_epi32(1);
    let sixteen = _mm512_set1_epi32(16);
    let sign = _mm512_set1_epi32(i32::MIN);
    let first = boundaries512(c.mids, c.tie_up, c.valid, job.mags[0]);
    for chunk in job.block.chunks(CHUNK512) {
        let mut w = [_mm512_setzero_ps(); 4];
        let mut valid = [0 as __mmask16; 4];
        // Codes (+16 in negative lanes) and step directions, per side and vector.
        let mut kk = [[_mm512_setzero_si512(); 4]; SIDES];
        let mut dir = [[_mm512_setzero_si512(); 4]; SIDES];
        for v in 0..4 {
            let lo = (16 * v).min(chunk.len());
            let n = (chunk.len() - lo).min(16);
            let mask: __mmask16 = ((1u32 << n) - 1) as u16;
            valid[v] = mask;
            // SAFETY: the masked load reads only `chunk[lo..lo + n]`.
            let x = unsafe { _mm512_maskz_loadu_ps(mask, chunk.as_ptr().add(lo)) };
            w[v] = _mm512_castsi512_ps(_mm512_andnot_si512(sign, _mm512_castps_si512(x)));
            for s in 0..SIDES {
                let z = if job.negate[s] {
                    _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign))
                } else {
                    x
                };
                // The first magnitude's code: a binary search of the ascending boundaries
                // (+inf past the table), counting those at or below z.
                let mut k = _mm512_setzero_si512();
                for step in [8, 4, 2, 1] {
                    let probe = _mm512_add_epi32(k, _mm512_set1_epi32(step - 1));
                    let ge =
                        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(z, _mm512_permutexvar_ps(probe, first));
                    k = _mm512_mask_add_epi32(k, ge, k, _mm512_set1_epi32(step));
                }
                let negm = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
                kk[s][v] = _mm512_mask_add_epi32(k, negm, k, sixteen);
                dir[s][v] = _mm512_mask_blend_epi32(negm, _mm512_set1_epi32(-1), one);
            }
        }
        // Each side's per-lane sums of 16 magnitudes, reduced together.
        let mut rows = [[_mm512_setzero_ps(); 16]; SIDES];
        for i in 0..m {
            let [s0, s1, y0, y1] = tables512(&c, job.mags[i]);
            for s in 0..SIDES {
                let mut acc = [_mm512_setzero_ps(); 2];
                for v in 0..4 {
                    let mut k = kk[s][v];
                    if i > 0 {
                        let b = _mm512_permutex2var_ps(s0, k, s1);
                        let cross = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(w[v], b);
                        k = _mm512_mask_add_epi32(k, cross, k, dir[s][v]);
                        kk[s][v] = k;
                    }
                    let d = _mm512_sub_ps(w[v], _mm512_permutex2var_ps(y0, k, y1));
                    acc[v & 1] = _mm512_mask3_fmadd_ps(d, d, acc[v & 1], valid[v]);
                }
                rows[s][i % 16] = _mm512_add_ps(acc[0], acc[1]);
            }
            if i % 16 == 15 || i == m - 1 {
                let i0 = i - i % 16;
                let cnt = i - i0 + 1;
                for s in 0..SIDES {
                    rows[s][cnt..].fill(_mm512_setzero_ps());
                    let o = &mut out[s * m + i0..s * m + i0 + cnt];
                    let mask = ((1u32 << cnt) - 1) as u16;
                    // SAFETY: the masked load and store touch only `o`'s `cnt` values.
                    unsafe {
                        let prev = _mm512_maskz_loadu_ps(mask, o.as_ptr());
                        let sums = _mm512_add_ps(prev, reduce16(&rows[s]));
                        _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, sums);
                    }
                }
            }
        }
    }
}

/// The boundaries of magnitude `a` in AVX2 (four f64 lanes at a time) into `out`.
#[target_feature(enable = "avx2,fma")]
fn boundaries256(mids: &[f64; MAX_LEVELS], tie_up: &[bool; MAX_LEVELS], nb: usize, a: f32) -> Row {
    let av = _mm256_set1_pd(a as f64);
    let mut out = Row([f32::INFINITY; 16]);
    for q in 0..4 {
        // SAFETY: `mids` has 16 f64.
        let b = _mm256_mul_pd(unsafe { _mm256_loadu_pd(mids.as_ptr().add(4 * q)) }, av);
        let f = _mm_add_ps(_mm256_cvtpd_ps(b), _mm_setzero_ps());
        let fd = _mm256_cvtps_pd(f);
        let lt = _mm256_cmp_pd::<_CMP_LT_OQ>(fd, b);
        let eq = _mm256_cmp_pd::<_CMP_EQ_OQ>(fd, b);
        let t = _mm256_castsi256_pd(_mm256_set_epi64x(
            -(tie_up[4 * q + 3] as i64),
            -(tie_up[4 * q + 2] as i64),
            -(tie_up[4 * q + 1] as i64),
            -(tie_up[4 * q] as i64),
        ));
        let bump = _mm256_or_pd(lt, _mm256_andnot_pd(t, eq));
        // Narrow the 64-bit masks to 32-bit lanes (the low halves of each pair).
        let bump = _mm256_castpd_si256(bump);
        let bump = _mm256_permutevar8x32_epi32(bump, _mm256_set_epi32(0, 0, 0, 0, 6, 4, 2, 0));
        let bump = _mm256_castsi256_si128(bump);
        let bits = _mm_castps_si128(f);
        let neg = _mm_castps_si128(_mm_cmplt_ps(f, _mm_setzero_ps()));
        // +1 for non-negative lanes, -1 for negative ones, where bumped.
        let delta = _mm_and_si128(bump, _mm_or_si128(neg, _mm_set1_epi32(1)));
        let v = _mm_castsi128_ps(_mm_add_epi32(bits, delta));
        let mut lanes = [0.0f32; 4];
        // SAFETY: `lanes` holds 4 f32.
        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), v) };
        for (l, &x) in lanes.iter().enumerate() {
            if 4 * q + l < nb {
                out.0[4 * q + l] = x;
            }
        }
    }
    out
}

/// A 16-entry table lookup: two `vpermps` and a blend on index bit 3.
#[target_feature(enable = "avx2,fma")]
fn lookup16(lo: __m256, hi: __m256, idx: __m256i) -> __m256 {
    let a = _mm256_permutevar8x32_ps(lo, idx);
    let b = _mm256_permutevar8x32_ps(hi, idx);
    _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
}

/// Horizontal sum of 8 lanes.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// The screen in AVX2. Safety: the CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn screen_avx2(job: &ScreenJob<'_>, out: &mut [f32]) {
    let t = job.table;
    let m = job.mags.len();
    assert!(t.len <= MAX_LEVELS && t.len >= 3);
    assert_eq!(out.len(), job.negate.len() * m);
    out.fill(0.0);
    if m == 0 {
        return;
    }
    let nb = t.len - 1;
    let bounds: Vec<Row> = job
        .mags
        .iter()
        .map(|&a| boundaries256(&t.mids, &t.tie_up, nb, a))
        .collect();
    // SAFETY: `levels` has 16 f32.
    let (l0, l1) = unsafe {
        (
            _mm256_loadu_ps(t.levels.as_ptr()),
            _mm256_loadu_ps(t.levels.as_ptr().add(8)),
        )
    };
    let ys: Vec<[__m256; 2]> = job
        .mags
        .iter()
        .map(|&a| {
            let av = _mm256_set1_ps(a);
            [_mm256_mul_ps(l0, av), _mm256_mul_ps(l1, av)]
        })
        .collect();
    let one = _mm256_set1_epi32(1);
    for (s, &neg) in job.negate.iter().enumerate() {
        let out = &mut out[s * m..(s + 1) * m];
        for chunk in job.block.chunks(CHUNK256) {
            let mut z = [_mm256_setzero_ps(); 4];
            let mut valid = [_mm256_setzero_ps(); 4];
            let mut k = [_mm256_setzero_si256(); 4];
            // Index offset (-1 where z >= 0: those look at B[k-1]) and step (+1 where z < 0).
            let mut adj = [_mm256_setzero_si256(); 4];
            let mut negv = [_mm256_setzero_si256(); 4];
            let mut dir = [_mm256_setzero_si256(); 4];
            for v in 0..4 {
                let mut lanes = [0.0f32; 8];
                let mut ok = [0i32; 8];
                for l in 0..8 {
                    if let Some(&x) = chunk.get(8 * v + l) {
                        lanes[l] = if neg { -x } else { x };
                        ok[l] = -1;
                    }
                }
                // SAFETY: 8 f32 and 8 i32.
                unsafe {
                    z[v] = _mm256_loadu_ps(lanes.as_ptr());
                    valid[v] = _mm256_castsi256_ps(_mm256_loadu_si256(ok.as_ptr().cast()));
                }
                for j in 0..nb {
                    let ge = _mm256_cmp_ps::<_CMP_GE_OQ>(z[v], _mm256_set1_ps(bounds[0].0[j]));
                    k[v] = _mm256_sub_epi32(k[v], _mm256_castps_si256(ge));
                }
                negv[v] =
                    _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(z[v], _mm256_setzero_ps()));
                adj[v] = _mm256_andnot_si256(negv[v], _mm256_set1_epi32(-1));
                dir[v] = _mm256_sub_epi32(_mm256_and_si256(negv[v], _mm256_set1_epi32(2)), one);
            }
            for i in 0..m {
                // SAFETY: each row is 16 aligned f32.
                let (b0, b1) = unsafe {
                    (
                        _mm256_load_ps(bounds[i].0.as_ptr()),
                        _mm256_load_ps(bounds[i].0.as_ptr().add(8)),
                    )
                };
                let mut acc = [_mm256_setzero_ps(); 2];
                for v in 0..4 {
                    if i > 0 {
                        // Negative lanes look at B[k] (step up when z >= it), the others at
                        // B[k-1] (step down when z < it).
                        let b = lookup16(b0, b1, _mm256_add_epi32(k[v], adj[v]));
                        let lt = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(z[v], b));
                        let cross = _mm256_xor_si256(lt, negv[v]);
                        k[v] = _mm256_add_epi32(k[v], _mm256_and_si256(cross, dir[v]));
                    }
                    let y = lookup16(ys[i][0], ys[i][1], k[v]);
                    let d = _mm256_and_ps(_mm256_sub_ps(z[v], y), valid[v]);
                    acc[v & 1] = _mm256_fmadd_ps(d, d, acc[v & 1]);
                }
                out[i] += hsum(_mm256_add_ps(acc[0], acc[1]));
            }
        }
    }
}
