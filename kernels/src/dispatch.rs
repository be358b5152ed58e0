//! The choice of a path (once per call) and the split of output rows over rayon's threads.

use crate::act::{exact_order, FastActs};
use crate::isa::{Acts, F32Rows, Isa, QRows};
use crate::shared_out::SharedOut;
use crate::{panel, panel_layout, reference, scalar, KernelError, Mode, QMatrix};
use rayon::prelude::*;

/// Below this many multiply-adds (`rows * cols * n`) a product stays on the calling thread.
pub const PARALLEL_MIN_WORK: usize = 1 << 18;

/// `y = x W^T` on the best available path. `x: [n, cols]`, `y: [n, rows]`, row-major.
pub fn matmul(
    q: &QMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) -> Result<(), KernelError> {
    matmul_with(Isa::detect(), q, x, n, y, mode)
}

pub(crate) fn check_len(
    what: &'static str,
    got: usize,
    a: usize,
    b: usize,
) -> Result<(), KernelError> {
    let want = a
        .checked_mul(b)
        .ok_or(KernelError::Overflow { rows: a, cols: b })?;
    if got != want {
        return Err(KernelError::Length { what, got, want });
    }
    Ok(())
}

/// `y = x W^T` on a chosen path; an error if the CPU lacks it or a length does not match.
pub fn matmul_with(
    isa: Isa,
    q: &QMatrix,
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
        reference::matmul(q, x, n, y, mode);
        return Ok(());
    }
    // Shapes whose blocks do not line up with vector lanes use the portable path.
    let isa = if q.simd_regular() { isa } else { Isa::Scalar };
    if mode == Mode::Fast && n >= panel::MIN_BATCH && panel::fits(q) {
        if let Some((quantize, decode, micro)) = panel::kernels(isa) {
            // SAFETY: the quantizer belongs to `isa`, available on this CPU (checked above).
            let acts = unsafe { panel_layout::PanelActs::new(x, n, q.cols(), q.block(), quantize) };
            let work = q.rows().saturating_mul(q.cols()).saturating_mul(n);
            // The tiles write `y` in place: no per-task buffer to fill and transpose.
            let out = SharedOut(y.as_mut_ptr());
            run_row_tasks(q.rows(), work, |r0, count| {
                // SAFETY: the kernels belong to `isa`, available on this CPU (checked above);
                // rows `r0..r0 + count` of `y` (`[n, rows]`) belong to this task alone.
                unsafe { panel::rows(q, &acts, n, r0, count, &out, decode, micro) }
            });
            return Ok(());
        }
    }
    let (acts, kernel): (Acts, QRows) = match (isa, mode) {
        (Isa::Scalar | Isa::Reference, Mode::Exact) => (Acts::Exact(x.into()), scalar_exact),
        (Isa::Scalar | Isa::Reference, Mode::Fast) => (
            Acts::Fast(Box::new(FastActs::new(x, n, q.cols(), q.block(), false))),
            scalar_fast,
        ),
        #[cfg(target_arch = "x86_64")]
        (simd, Mode::Exact) => (
            Acts::Exact(exact_order(x, n, q.cols()).into()),
            crate::x86_64::exact_kernel(simd),
        ),
        #[cfg(target_arch = "x86_64")]
        (simd, Mode::Fast) => (
            Acts::Fast(Box::new(FastActs::new(x, n, q.cols(), q.block(), true))),
            crate::x86_64::fast_kernel(simd),
        ),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no SIMD path is available off x86-64"),
    };
    let work = q.rows().saturating_mul(q.cols()).saturating_mul(n);
    run_rows(q.rows(), n, work, y, |r0, out| {
        // SAFETY: `kernel` belongs to `isa`, which `is_available` confirmed on this CPU (or
        // is the portable path); `out` holds whole rows `r0..` of the output.
        unsafe { kernel(q, &acts, n, r0, out) }
    });
    Ok(())
}

// The portable kernels under the common signature.
unsafe fn scalar_exact(q: &QMatrix, a: &Acts, n: usize, r0: usize, out: &mut [f32]) {
    if let Acts::Exact(x) = a {
        scalar::qrows_exact(q, x, n, r0, out)
    }
}
unsafe fn scalar_fast(q: &QMatrix, a: &Acts, n: usize, r0: usize, out: &mut [f32]) {
    if let Acts::Fast(f) = a {
        scalar::qrows_fast(q, f, n, r0, out)
    }
}
unsafe fn scalar_f32(w: &[f32], cols: usize, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    scalar::f32_rows(w, cols, x, n, r0, out)
}

/// Dense `y = x W^T` for f32 `w: [rows, cols]` on the best available path.
pub fn matmul_f32(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_f32_with(Isa::detect(), w, rows, cols, x, n, y)
}

/// Dense `y = x W^T` on a chosen path.
pub fn matmul_f32_with(
    isa: Isa,
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    if !isa.is_available() {
        return Err(KernelError::Unavailable { isa });
    }
    check_len("weights w [rows, cols]", w.len(), rows, cols)?;
    check_len("activations x [n, cols]", x.len(), n, cols)?;
    check_len("output y [n, rows]", y.len(), n, rows)?;
    let kernel: F32Rows = match isa {
        Isa::Reference => {
            reference::matmul_f32(w, rows, cols, x, n, y);
            return Ok(());
        }
        Isa::Scalar => scalar_f32,
        #[cfg(target_arch = "x86_64")]
        simd => crate::x86_64::f32_kernel(simd),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no SIMD path is available off x86-64"),
    };
    let work = rows.saturating_mul(cols).saturating_mul(n);
    run_rows(rows, n, work, y, |r0, out| {
        // SAFETY: `kernel` belongs to an available ISA (checked above); `out` holds whole rows.
        unsafe { kernel(w, cols, x, n, r0, out) }
    });
    Ok(())
}

/// Rows per task are a multiple of this (the SIMD kernels' row tile).
const ROW_TILE: usize = 4;

/// Output rows moved together from a task's `[row][j]` buffer into `y` (`[j][row]`): 16 f32
/// are one cache line of `y`.
const SCATTER_BAND: usize = 16;

/// Runs `f(r0, count)` over tasks of whole output rows (a multiple of `ROW_TILE` each but
/// the last), in parallel when the work is large: the split `run_rows` makes.
pub(crate) fn run_row_tasks(rows: usize, work: usize, f: impl Fn(usize, usize) + Sync) {
    if rows == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if threads > 1 && work >= PARALLEL_MIN_WORK {
        let per = rows.div_ceil(4 * threads).div_ceil(ROW_TILE) * ROW_TILE;
        (0..rows.div_ceil(per))
            .into_par_iter()
            .for_each(|t| f(t * per, per.min(rows - t * per)));
    } else {
        f(0, rows);
    }
}

/// Runs `f(r0, out)` over tasks of whole output rows, in parallel when the work is large, and
/// writes `y` (`[n, rows]`) from the `[row][j]` results.
pub(crate) fn run_rows(
    rows: usize,
    n: usize,
    work: usize,
    y: &mut [f32],
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if rows == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && work >= PARALLEL_MIN_WORK;
    let per = rows.div_ceil(4 * threads).div_ceil(ROW_TILE) * ROW_TILE;
    if n == 1 {
        // One activation row: `[row][j]` is `y` itself.
        if parallel {
            y.par_chunks_mut(per)
                .enumerate()
                .for_each(|(t, out)| f(t * per, out));
        } else {
            f(0, y);
        }
        return;
    }
    // Each task computes its rows into a small `[row][j]` buffer, then scatters them into
    // `y` (`[j][row]`); tasks own disjoint rows, so their writes never meet.
    let out = SharedOut(y.as_mut_ptr());
    let task = |r0: usize, count: usize| {
        let mut buf = vec![0.0f32; count * n];
        f(r0, &mut buf);
        // The transpose goes in bands of SCATTER_BAND rows: for each j the band's values are
        // adjacent in `y`, so each output cache line is written whole once instead of one
        // value per visit (a column of `y` is `rows` floats apart, which thrashes L1).
        for i0 in (0..count).step_by(SCATTER_BAND) {
            let band = &buf[i0 * n..(i0 + SCATTER_BAND.min(count - i0)) * n];
            let rows_here = band.len() / n;
            for j in 0..n {
                for i in 0..rows_here {
                    // SAFETY: `j * rows + r0 + i0 + i < n * rows = y.len()`; row `r0 + i0 + i`
                    // belongs to this task alone, and `y` stays exclusively borrowed until
                    // every task ends.
                    unsafe { out.write(j * rows + r0 + i0 + i, band[i * n + j]) };
                }
            }
        }
    };
    if parallel {
        (0..rows.div_ceil(per))
            .into_par_iter()
            .for_each(|t| task(t * per, per.min(rows - t * per)));
    } else {
        task(0, rows);
    }
}
