//! The Student Float `nu` that minimises a tensor's own quantization error.
//!
//! DESIGN.md ("Student-t fitting"): on real weights the in-block t-fit gets close to the best
//! codebook, and a direct 1-D search of the quantization error does best. The error as a function
//! of `ln nu` is smooth and, in practice, has one minimum: a coarse grid finds its bracket and
//! golden-section search narrows it.

use crate::block::{check_matrix_len, BlockQuantizer, ScaleRule};
use crate::fit::NU_MAX;
use crate::sample::Rng;
use crate::screen::{PortableScreen, Screen};
use crate::{Format, FormatError};
use rayon::prelude::*;

/// Smallest `nu` searched: heavier tails than t(1) put almost every value on the zero code.
pub const SEARCH_NU_MIN: f64 = 1.0;
/// Matrices with more elements are searched on a deterministic sample of whole rows of about
/// this many elements (rows keep their blocks intact).
pub const SEARCH_MAX_SAMPLES: usize = 1 << 20;
/// The search stops when `ln nu` is known to this precision (about 1% in `nu`).
const LN_NU_TOL: f64 = 0.01;
const GRID: usize = 10;

/// The result of [`search_nu_min_error`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NuSearch {
    /// The best `nu` found, in [`SEARCH_NU_MIN`, `NU_MAX`].
    pub nu: f64,
    /// `sum((q - w)^2) / sum((w - mean)^2)` on the searched elements at that `nu`.
    pub nmse: f64,
    /// Quantizations run.
    pub evaluations: usize,
}

/// Searches the `sf{bits}:nu=X` codebook with the least squared error on the row-major
/// `[rows, cols]` matrix `w` quantized by `q` with `rule`. `bits` is 3 or 4. Deterministic.
pub fn search_nu_min_error(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u32,
    q: &BlockQuantizer,
    rule: ScaleRule,
) -> Result<NuSearch, FormatError> {
    search_nu_min_error_with_screen(w, rows, cols, bits, q, rule, &PortableScreen)
}

/// [`search_nu_min_error`] with [`ScaleRule::Search`]'s candidates screened by `screen` (a
/// vectorized one lives in `tquant-kernels`); the same result whatever the screen.
pub fn search_nu_min_error_with_screen(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u32,
    q: &BlockQuantizer,
    rule: ScaleRule,
    screen: &(dyn Screen + Sync),
) -> Result<NuSearch, FormatError> {
    check_matrix_len(w.len(), rows, cols)?;
    Format::student_float(bits, 5.0)?; // rejects bits other than 3 and 4 up front
    let sample = sample_rows(w, rows, cols);
    let n_rows = sample.len() / cols.max(1);
    let mean = sample.iter().map(|&v| v as f64).sum::<f64>() / sample.len().max(1) as f64;
    let var: f64 = sample.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
    let error_at = |u: f64| -> Result<f64, FormatError> {
        let f = Format::student_float(bits, u.exp())?;
        let m = q.quantize_with_screen(f.codebook(), &sample, n_rows, cols, rule, screen)?;
        let deq = m.dequantize(f.codebook());
        let err: f64 = sample
            .iter()
            .zip(&deq)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum();
        Ok(if var > 0.0 { err / var } else { err })
    };
    let (u_min, u_max) = (SEARCH_NU_MIN.ln(), NU_MAX.ln());
    // The grid points are independent quantizations: they run in parallel (collected in order,
    // so the result does not depend on the thread count).
    let grid: Vec<(f64, f64)> = (0..GRID)
        .into_par_iter()
        .map(|i| {
            let u = u_min + (u_max - u_min) * i as f64 / (GRID - 1) as f64;
            error_at(u).map(|e| (u, e))
        })
        .collect::<Result<_, _>>()?;
    let mut evaluations = GRID;
    let mut eval = |u: f64| -> Result<f64, FormatError> {
        evaluations += 1;
        error_at(u)
    };
    // The first minimum wins ties, so equal errors keep the heavier-tailed (earlier) nu.
    let best = (0..GRID).fold(0, |b, i| if grid[i].1 < grid[b].1 { i } else { b });
    let mut best_point = grid[best];
    let (mut a, mut b) = (
        grid[best.saturating_sub(1)].0,
        grid[(best + 1).min(GRID - 1)].0,
    );
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (eval(c)?, eval(d)?);
    while b - a > LN_NU_TOL {
        if fc <= fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = eval(c)?;
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = eval(d)?;
        }
    }
    for (u, e) in [(c, fc), (d, fd)] {
        if e < best_point.1 {
            best_point = (u, e);
        }
    }
    // exp(ln 1000) is not 1000 in floating point: snap the ends of the range.
    let nu = match best_point.0 {
        u if u >= u_max - 1e-9 => NU_MAX,
        u if u <= u_min + 1e-9 => SEARCH_NU_MIN,
        u => u.exp(),
    };
    Ok(NuSearch {
        nu,
        nmse: best_point.1,
        evaluations,
    })
}

/// All rows, or a deterministic stratified sample of whole rows of about
/// [`SEARCH_MAX_SAMPLES`] elements.
pub(crate) fn sample_rows(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    if w.len() <= SEARCH_MAX_SAMPLES || rows <= 1 {
        return w.to_vec();
    }
    let keep = (SEARCH_MAX_SAMPLES / cols.max(1)).clamp(1, rows);
    let mut rng = Rng::new(0x6e75_5365); // "nuSe"
    let mut out = Vec::with_capacity(keep * cols);
    for i in 0..keep {
        let lo = i * rows / keep;
        let hi = ((i + 1) * rows / keep).max(lo + 1);
        let r = lo + rng.below((hi - lo) as u64) as usize;
        out.extend_from_slice(&w[r * cols..(r + 1) * cols]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockSize, ScaleDtype};

    fn quantizer() -> BlockQuantizer {
        BlockQuantizer {
            block: BlockSize::Elements(64),
            scale_dtype: ScaleDtype::F32,
        }
    }

    fn nmse_at(w: &[f32], rows: usize, cols: usize, nu: f64) -> f64 {
        let f = Format::student_float(4, nu).unwrap();
        let m = quantizer().quantize(f.codebook(), w, rows, cols).unwrap();
        let deq = m.dequantize(f.codebook());
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
        let var: f64 = w.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
        w.iter()
            .zip(&deq)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            / var
    }

    #[test]
    fn search_beats_every_fixed_nu_it_could_have_picked() {
        let mut rng = Rng::new(4);
        let (rows, cols) = (256, 256);
        for data in [
            rng.normal_vec(rows * cols),
            rng.student_t_vec(rows * cols, 2.5),
        ] {
            let s =
                search_nu_min_error(&data, rows, cols, 4, &quantizer(), ScaleRule::Absmax).unwrap();
            assert!((SEARCH_NU_MIN..=NU_MAX).contains(&s.nu), "{s:?}");
            assert!(s.evaluations < 40, "{s:?}");
            assert!((s.nmse - nmse_at(&data, rows, cols, s.nu)).abs() < 1e-12);
            for nu in [1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0] {
                let e = nmse_at(&data, rows, cols, nu);
                assert!(s.nmse <= e * 1.002, "nu {nu}: {e} < searched {s:?}");
            }
            let again =
                search_nu_min_error(&data, rows, cols, 4, &quantizer(), ScaleRule::Absmax).unwrap();
            assert_eq!(again, s);
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let q = quantizer();
        assert!(search_nu_min_error(&[0.0; 10], 3, 3, 4, &q, ScaleRule::Absmax).is_err());
        assert!(search_nu_min_error(&[0.0; 64], 1, 64, 5, &q, ScaleRule::Absmax).is_err());
    }

    #[test]
    fn large_matrices_are_sampled_by_whole_rows() {
        let w: Vec<f32> = (0..(1 << 21)).map(|i| (i / 512) as f32).collect();
        let s = sample_rows(&w, 4096, 512);
        assert_eq!(s.len(), SEARCH_MAX_SAMPLES);
        for row in s.chunks(512) {
            assert!(row.iter().all(|&v| v == row[0]), "a whole row");
        }
    }
}
