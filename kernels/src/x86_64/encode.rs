//! The block encoder of `tquant_formats::encode` in AVX-512 and AVX2: the same division
//! `x / scale` per element (IEEE, so the same quotient), the rank of the quotient among the
//! table's thresholds (how many lie strictly below it; NaN has rank 0 and is replaced by the
//! zero code), and the rank's code by a byte shuffle.
//!
//! - AVX-512 finds the rank by a four-step binary search over the 16-entry padded thresholds
//!   (`vpermps` lookups), since "threshold below the quotient" is monotone along the table.
//! - AVX2 counts the thresholds below the quotient, one compare each.

use std::arch::x86_64::*;
use tquant_formats::encode::{extreme_of, EncodeTable};

/// The block's extreme in AVX-512. Safety: the CPU must have AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn extreme_avx512(block: &[f32]) -> (f32, f32) {
    let n = block.len();
    let p = block.as_ptr();
    // `max(x, acc)` returns `acc` when `x` is NaN, so NaN never enters the accumulators.
    let mut hi = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut lo = _mm512_set1_ps(f32::INFINITY);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`.
        let x = unsafe { _mm512_loadu_ps(p.add(i)) };
        hi = _mm512_max_ps(x, hi);
        lo = _mm512_min_ps(x, lo);
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        // SAFETY: only the `n - i` lanes in `m` are read; the others keep the accumulator.
        let (xh, xl) = unsafe {
            (
                _mm512_mask_loadu_ps(hi, m, p.add(i)),
                _mm512_mask_loadu_ps(lo, m, p.add(i)),
            )
        };
        hi = _mm512_max_ps(xh, hi);
        lo = _mm512_min_ps(xl, lo);
    }
    let (mut h, mut l) = ([0.0f32; 16], [0.0f32; 16]);
    // SAFETY: two 16-f32 arrays.
    unsafe {
        _mm512_storeu_ps(h.as_mut_ptr(), hi);
        _mm512_storeu_ps(l.as_mut_ptr(), lo);
    }
    let max = h.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let min = l.iter().fold(f32::INFINITY, |a, &v| a.min(v));
    extreme_of(block, max, min)
}

/// Codes of 16 lanes (`m` selects the lanes loaded; the others are zero).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn codes16_512(x: __m512, s: __m512, th: __m512, codes: __m128i, zero: __m128i) -> __m128i {
    let q = _mm512_div_ps(x, s);
    let mut k = _mm512_setzero_si512();
    for step in [8, 4, 2, 1] {
        let t = _mm512_permutexvar_ps(_mm512_add_epi32(k, _mm512_set1_epi32(step - 1)), th);
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(t, q);
        k = _mm512_mask_add_epi32(k, below, k, _mm512_set1_epi32(step));
    }
    let c = _mm_shuffle_epi8(codes, _mm512_cvtepi32_epi8(k));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(q, q);
    _mm_mask_blend_epi8(nan, c, zero)
}

/// The codes of `block / scale` in AVX-512. Safety: the CPU must have AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) unsafe fn encode_avx512(t: &EncodeTable, block: &[f32], scale: f32, out: &mut [u8]) {
    assert_eq!(block.len(), out.len());
    let n = block.len();
    let (p, o) = (block.as_ptr(), out.as_mut_ptr());
    // SAFETY: 16 f32 and 16 bytes.
    let (th, codes) = unsafe {
        (
            _mm512_loadu_ps(t.thresholds.as_ptr()),
            _mm_loadu_si128(t.rank_code.as_ptr().cast()),
        )
    };
    let zero = _mm_set1_epi8(t.zero_code as i8);
    let s = _mm512_set1_ps(scale);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n` for both slices.
        unsafe {
            let x = _mm512_loadu_ps(p.add(i));
            _mm_storeu_si128(o.add(i).cast(), codes16_512(x, s, th, codes, zero));
        }
        i += 16;
    }
    if i < n {
        let m = ((1u32 << (n - i)) - 1) as __mmask16;
        // SAFETY: only the `n - i` lanes in `m` are read and written.
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, p.add(i));
            _mm_mask_storeu_epi8(o.add(i).cast(), m, codes16_512(x, s, th, codes, zero));
        }
    }
}

/// Sixteen i32 lanes (two vectors) narrowed to bytes in order (values within -128..=127).
#[target_feature(enable = "avx2,fma")]
fn narrow16(a: __m256i, b: __m256i) -> __m128i {
    let w = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(a, b));
    _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w))
}

/// Codes of 16 elements at `p`. Safety: 16 f32 readable at `p`.
#[target_feature(enable = "avx2,fma")]
unsafe fn codes16_256(
    p: *const f32,
    s: __m256,
    th: &[f32],
    codes: __m128i,
    zero: __m128i,
) -> __m128i {
    // SAFETY: the caller's.
    let (x0, x1) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
    let (q0, q1) = (_mm256_div_ps(x0, s), _mm256_div_ps(x1, s));
    let (mut r0, mut r1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for &t in th {
        let t = _mm256_set1_ps(t);
        // A true compare is all ones, -1.
        r0 = _mm256_sub_epi32(r0, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(t, q0)));
        r1 = _mm256_sub_epi32(r1, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(t, q1)));
    }
    let c = _mm_shuffle_epi8(codes, narrow16(r0, r1));
    let nan = narrow16(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(q0, q0)),
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(q1, q1)),
    );
    _mm_blendv_epi8(c, zero, nan)
}

/// The codes of `block / scale` in AVX2. Safety: the CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn encode_avx2(t: &EncodeTable, block: &[f32], scale: f32, out: &mut [u8]) {
    assert_eq!(block.len(), out.len());
    let n = block.len();
    // The padding (+inf) never counts.
    let len = t.thresholds.iter().take_while(|v| v.is_finite()).count();
    let th = &t.thresholds[..len];
    // SAFETY: 16 bytes.
    let codes = unsafe { _mm_loadu_si128(t.rank_code.as_ptr().cast()) };
    let zero = _mm_set1_epi8(t.zero_code as i8);
    let s = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n` for both slices.
        unsafe {
            let c = codes16_256(block.as_ptr().add(i), s, th, codes, zero);
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), c);
        }
        i += 16;
    }
    if i < n {
        let mut x = [0.0f32; 16];
        x[..n - i].copy_from_slice(&block[i..]);
        let mut c = [0u8; 16];
        // SAFETY: 16 f32 in `x`, 16 bytes in `c`.
        unsafe {
            let v = codes16_256(x.as_ptr(), s, th, codes, zero);
            _mm_storeu_si128(c.as_mut_ptr().cast(), v);
        }
        out[i..].copy_from_slice(&c[..n - i]);
    }
}
