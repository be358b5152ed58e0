//! Products over q8_0 weights (`tquant_formats::q8_0`, ggml's Q8_0): int8 codes `[rows, cols]`,
//! one f16 scale per block of 32 along a row (the last block of a ragged row shorter), read in
//! place. `y = x W^T` with `W = q * d`.
//!
//! - [`Mode::Exact`]: codes times their scale in f32 (exact: an 8-bit integer times an f16),
//!   f32 products and sums, within [`crate::exact_budget`] of the f64 [`reference`].
//! - [`Mode::Fast`]: each 32-element block of every activation row is quantized to int8 as
//!   ggml's `Q8_0` activations are (scale `amax / 127` kept in f32, round to nearest even);
//!   block dot products are summed in int32 (AVX-512 VNNI `vpdpbusd`, AVX2
//!   `vpmaddubsw` + `vpmaddwd`, on `|w|` and `x` with `w`'s sign) and rescaled by the two
//!   scales in f32. The int8 arithmetic is the reference's (`Mode::Fast`); every path matches
//!   it within [`crate::fast_budget`].
//!
//! Dispatch is the crate's: [`Isa::detect`] once per process, one kernel per call, rows split
//! over rayon's threads.

use crate::dispatch::{check_len, run_rows};
pub use crate::q8::{f16_to_f32, Q8Matrix, Q8_BLOCK};
pub(crate) use crate::q8::{Q8Acts, Q8In, Q8Rows};
use crate::{Isa, KernelError, Mode};

/// Bytes as int8 codes, without a copy.
pub fn i8_codes(bytes: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len()) }
}

/// Little-endian 2-byte values (f16 scales as safetensors stores them) as `u16` without a
/// copy; `None` when misaligned, of odd length, or on a big-endian target.
pub fn f16_bits(bytes: &[u8]) -> Option<&[u16]> {
    crate::bf16::bf16_bits(bytes)
}

/// `y = x W^T` for q8_0 weights on the best available path. `x: [n, cols]`, `y: [n, rows]`.
pub fn matmul_q8_0(
    q: &Q8Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    matmul_q8_0_with(Isa::detect(), q, x, n, y, mode)
}

/// `y = x W^T` for q8_0 weights on a chosen path; an error if the CPU lacks it or a length does
/// not match.
pub fn matmul_q8_0_with(
    isa: Isa,
    q: &Q8Matrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    if !isa.is_available() {
        return Err(KernelError::Unavailable { isa });
    }
    check_len("activations x [n, cols]", x.len(), n, q.cols())?;
    check_len("output y [n, rows]", y.len(), n, q.rows())?;
    if isa == Isa::Reference {
        reference(q, x, n, y, mode);
        return Ok(());
    }
    let acts = match mode {
        Mode::Exact => Q8In::Exact(x),
        Mode::Fast => Q8In::Fast(Q8Acts::new(x, n, q.cols())),
    };
    let kernel: Q8Rows = match isa {
        Isa::Reference | Isa::Scalar => scalar_rows,
        #[cfg(target_arch = "x86_64")]
        simd => crate::x86_64::int8::kernel(simd, mode),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no SIMD path is available off x86-64"),
    };
    let work = q.rows().saturating_mul(q.cols()).saturating_mul(n);
    run_rows(q.rows(), n, work, y, |r0, out| {
        // SAFETY: `kernel` belongs to `isa`, available on this CPU (checked above) or portable;
        // `out` holds whole rows `r0..`.
        unsafe { kernel(q, &acts, n, r0, out) }
    });
    Ok(())
}

/// The oracle: f64 sums. Exact mode sums `(q d) x`; fast mode sums the int8 block products
/// times both scales, with the activations quantized as every path quantizes them.
pub fn reference(q: &Q8Matrix, x: &[f32], n: usize, y: &mut [f32], mode: Mode) {
    let cols = q.cols();
    let acts = (mode == Mode::Fast).then(|| Q8Acts::new(x, n, cols));
    for j in 0..n {
        for r in 0..q.rows() {
            let (codes, sc) = (q.row_codes(r), q.row_scales(r));
            let mut s = 0.0f64;
            for (b, cb) in codes.chunks(Q8_BLOCK).enumerate() {
                let d = f16_to_f32(sc[b]) as f64;
                match &acts {
                    None => {
                        for (k, &c) in cb.iter().enumerate() {
                            let w = (c as f32 * d as f32) as f64;
                            s += w * x[j * cols + b * Q8_BLOCK + k] as f64;
                        }
                    }
                    Some(a) => {
                        let (xa, dx) = a.block(j, b);
                        let dot: i64 = cb.iter().zip(xa).map(|(&w, &v)| w as i64 * v as i64).sum();
                        s += d * dx as f64 * dot as f64;
                    }
                }
            }
            y[j * q.rows() + r] = s as f32;
        }
    }
}

/// The portable kernel.
unsafe fn scalar_rows(q: &Q8Matrix, a: &Q8In, n: usize, r0: usize, out: &mut [f32]) {
    let cols = q.cols();
    let mut wide = vec![0.0f32; cols];
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let r = r0 + i;
        match a {
            Q8In::Exact(x) => {
                q.decode_row(r, &mut wide);
                for (j, y) in o.iter_mut().enumerate() {
                    *y = crate::scalar::dot_f32(&wide, &x[j * cols..(j + 1) * cols]);
                }
            }
            Q8In::Fast(acts) => {
                let (codes, sc) = (q.row_codes(r), q.row_scales(r));
                for (j, y) in o.iter_mut().enumerate() {
                    let mut s = 0.0f32;
                    for (b, cb) in codes.chunks(Q8_BLOCK).enumerate() {
                        let (xa, dx) = acts.block(j, b);
                        let dot: i32 = cb.iter().zip(xa).map(|(&w, &v)| w as i32 * v as i32).sum();
                        s += f16_to_f32(sc[b]) * dx * dot as f32;
                    }
                    *y = s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_their_lengths() {
        let codes = [0i8; 6];
        let scales = [0u16; 2];
        assert!(Q8Matrix::new(2, 3, &codes, &scales).is_ok());
        assert!(matches!(
            Q8Matrix::new(2, 3, &codes[..5], &scales),
            Err(KernelError::Length { .. })
        ));
        assert!(matches!(
            Q8Matrix::new(2, 3, &codes, &scales[..1]),
            Err(KernelError::Length { .. })
        ));
    }

    #[test]
    fn byte_views_of_codes_and_scales() {
        assert_eq!(i8_codes(&[0x81, 0x7f, 0]), &[-127i8, 127, 0]);
        let words = [0x3c00u16, 0xbc00];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut buf = vec![0u8; bytes.len() + 2];
        let even = (buf.as_ptr() as usize) % 2;
        buf[even..even + 4].copy_from_slice(&bytes);
        let bits = f16_bits(&buf[even..even + 4]).unwrap();
        assert_eq!((f16_to_f32(bits[0]), f16_to_f32(bits[1])), (1.0, -1.0));
        assert_eq!(f16_bits(&buf[even + 1..even + 3]), None, "odd address");
    }

    #[test]
    fn activations_round_to_nearest_even_per_block() {
        // amax 127: scale 1, so 2.5 -> 2 and 3.5 -> 4 (ties to even).
        let mut x = vec![0.0f32; 40];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = 3.5;
        x[33] = -1.0;
        let a = Q8Acts::new(&x, 1, 40);
        let (b0, d0) = a.block(0, 0);
        assert_eq!((d0, &b0[..3]), (1.0, &[127i8, 2, 4][..]));
        let (b1, d1) = a.block(0, 1);
        assert_eq!((d1, b1[1], b1[8]), (1.0 / 127.0, -127, 0));
    }
}
