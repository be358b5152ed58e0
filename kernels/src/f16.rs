//! Dense products over IEEE f16 weights kept at their stored width: `y = x W^T` with `W` as f16
//! bits (`u16`, `[rows, cols]`), `x` and `y` f32.
//!
//! Every path widens `W` to f32 in registers (`vcvtph2ps`: F16C on the AVX2 path, AVX-512F on the
//! AVX-512 path; the `half` crate on the portable one), exactly, subnormals included, and sums
//! `w * x` in f32. So results match f32 arithmetic on the same weights within summation-order
//! error ([`crate::exact_budget`]) in both modes: no instruction multiplies f16 by a rounded
//! activation faster on these CPUs, and decoding reads the weights at half the bytes of f32.
//!
//! The bytes as `u16` bits: [`crate::bf16_bits`] (the same little-endian view).

use crate::widen::Half;
pub use crate::widen::{f16_to_f32, f32_to_f16};
use crate::{Isa, KernelError, Mode};

/// `y = x W^T` for f16 `w: [rows, cols]` on the best available path. `mode` is accepted for
/// symmetry with the other products; both modes are exact f32 arithmetic.
pub fn matmul_f16(
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    matmul_f16_with(Isa::detect(), w, rows, cols, x, n, y, mode)
}

/// `y = x W^T` for f16 weights on a chosen path; an error if the CPU lacks it or a length does
/// not match.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f16_with(
    isa: Isa,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    crate::bf16::run_half(Half::F16, isa, false, w, rows, cols, x, n, y, mode)
}

#[cfg(test)]
mod tests;
