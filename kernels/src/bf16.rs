//! Dense products over bf16 weights kept at their stored width: `y = x W^T` with `W` as bf16
//! bits (`u16`, `[rows, cols]`), `x` and `y` f32.
//!
//! - [`Mode::Exact`]: every path widens `W` to f32 (a 16-bit shift: bf16 is the top half of an
//!   f32) and sums `w * x` in f32, so results match f32 arithmetic on the same weights within
//!   summation-order error ([`crate::exact_budget`]).
//! - [`Mode::Fast`]: `x` is first rounded to bf16 (round to nearest even); the products of two
//!   bf16 values are exact in f32 and summed in f32. With AVX512-BF16 this is `vdpbf16ps`;
//!   elsewhere the same arithmetic runs on the widening kernels. Against exact arithmetic each
//!   term moves by at most [`BF16_FAST_REL`] of `|w x|`.
//!
//! Dispatch is the crate's: [`Isa::detect`] once per process, the sub-path (`vdpbf16ps` or
//! widening) once per call.

use crate::dispatch::{check_len, run_rows};
use crate::isa::{Bf16Acts, Bf16Rows};
use crate::widen::Half;
pub use crate::widen::{bf16_to_f32, f32_to_bf16};
use crate::{reference, Isa, KernelError, Mode};
use std::sync::OnceLock;

/// Fast mode's error against exact arithmetic, per term, relative to `|w_k x_k|`: rounding
/// `x` to bf16 (8 significant bits) moves it by at most half a unit in the last place, 2^-8
/// relative. So `|y_fast - y_exact| <= BF16_FAST_REL * sum_k |w_k x_k|` plus f32 summation
/// error ([`crate::exact_budget`]).
pub const BF16_FAST_REL: f64 = 1.0 / 256.0;

/// Little-endian bf16 bytes (as safetensors stores them) seen as `u16` bits without a copy;
/// `None` when the bytes are not 2-byte aligned or of odd length, or on a big-endian target.
pub fn bf16_bits(bytes: &[u8]) -> Option<&[u16]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern is a valid u16; `align_to` only yields the aligned middle (an
    // odd length or address leaves a head or tail, refused below).
    let (head, mid, tail) = unsafe { bytes.align_to::<u16>() };
    (head.is_empty() && tail.is_empty()).then_some(mid)
}

/// Whether this CPU has AVX512-BF16 (`vdpbf16ps`), used by fast mode on the AVX-512 path.
pub fn bf16_dot_available() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            Isa::Avx512.is_available() && std::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// `y = x W^T` for bf16 `w: [rows, cols]` on the best available path.
pub fn matmul_bf16(
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    matmul_bf16_with(Isa::detect(), w, rows, cols, x, n, y, mode)
}

/// `y = x W^T` for bf16 weights on a chosen path; an error if the CPU lacks it or a length
/// does not match.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_with(
    isa: Isa,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    let dot = mode == Mode::Fast && isa == Isa::Avx512 && bf16_dot_available();
    run(isa, dot, w, rows, cols, x, n, y, mode)
}

/// The dispatch, with the `vdpbf16ps` sub-path chosen by the caller (tests run both).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    isa: Isa,
    dot: bool,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    run_half(Half::Bf16, isa, dot, w, rows, cols, x, n, y, mode)
}

/// The dispatch of both 16-bit weight encodings. f16 weights take f32 activations in either
/// mode (no `vdpbf16ps`, no rounding): their widening is exact and the product f32 arithmetic.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_half(
    half: Half,
    isa: Isa,
    dot: bool,
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    let dot_ok = half == Half::Bf16 && isa == Isa::Avx512 && bf16_dot_available();
    if !isa.is_available() || (dot && !dot_ok) {
        return Err(KernelError::Unavailable { isa });
    }
    check_len("weights w [rows, cols]", w.len(), rows, cols)?;
    check_len("activations x [n, cols]", x.len(), n, cols)?;
    check_len("output y [n, rows]", y.len(), n, rows)?;
    // `vdpbf16ps` rounds activations to bf16: fast mode only. f16 weights: exact arithmetic.
    let mode = if half == Half::F16 { Mode::Exact } else { mode };
    let dot = dot && mode == Mode::Fast;
    let acts = match (mode, dot) {
        (Mode::Exact, _) => Bf16Acts::Wide(x.into()),
        (Mode::Fast, false) => Bf16Acts::Wide(
            x.iter()
                .map(|&v| bf16_to_f32(f32_to_bf16(v)))
                .collect::<Vec<_>>()
                .into(),
        ),
        (Mode::Fast, true) => Bf16Acts::Bits(x.iter().map(|&v| f32_to_bf16(v)).collect()),
    };
    let kernel: Bf16Rows = match isa {
        Isa::Reference => {
            match half {
                Half::Bf16 => reference::matmul_bf16(w, rows, cols, x, n, y, mode),
                Half::F16 => reference::matmul_f16(w, rows, cols, x, n, y),
            }
            return Ok(());
        }
        Isa::Scalar => match half {
            Half::Bf16 => scalar_rows::<false>,
            Half::F16 => scalar_rows::<true>,
        },
        #[cfg(target_arch = "x86_64")]
        simd => match half {
            Half::Bf16 => crate::x86_64::bf16_kernel(simd, dot),
            Half::F16 => crate::x86_64::f16_kernel(simd),
        },
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no SIMD path is available off x86-64"),
    };
    let work = rows.saturating_mul(cols).saturating_mul(n);
    run_rows(rows, n, work, y, |r0, out| {
        // SAFETY: `kernel` belongs to an available ISA (checked above, `vdpbf16ps` included);
        // `out` holds whole rows.
        unsafe { kernel(w, cols, &acts, n, r0, out) }
    });
    Ok(())
}

/// The portable kernel (bf16, or f16 when `F16`): rows `r0..r0 + out.len() / n`, `out` is
/// `[row][j]`.
unsafe fn scalar_rows<const F16: bool>(
    w: &[u16],
    cols: usize,
    a: &Bf16Acts,
    n: usize,
    r0: usize,
    out: &mut [f32],
) {
    let half = if F16 { Half::F16 } else { Half::Bf16 };
    let Bf16Acts::Wide(x) = a else {
        unreachable!("the portable path takes widened activations")
    };
    let mut wide = vec![0.0f32; cols];
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let wr = &w[(r0 + i) * cols..(r0 + i + 1) * cols];
        for (d, &b) in wide.iter_mut().zip(wr) {
            *d = half.to_f32(b);
        }
        for (j, y) in o.iter_mut().enumerate() {
            *y = crate::scalar::dot_f32(&wide, &x[j * cols..(j + 1) * cols]);
        }
    }
}

#[cfg(test)]
mod tests;
