//! Choosing a format per matrix: quantize a matrix with each candidate codebook and keep the one
//! whose dequantized matrix is closest to the original under a pluggable error.
//!
//! Every candidate shares the block size and the scale dtype, so all of them store the same bits
//! per weight: the choice trades nothing but the multiplier the codebook needs. The error is a
//! [`SelectionError`]: the plain sum of squared differences ([`SquaredError`]) by default, or a
//! per-input-column weighted one ([`ColumnWeightedError`], e.g. weighted by the mean square of
//! each input activation, the diagonal of the layer's Hessian `X^T X`), or any closure.

use crate::block::{BlockQuantizer, QuantizedMatrix, ScaleRule};
use crate::screen::{PortableScreen, Screen};
use crate::{Codebook, FormatError};

/// Matrices with more elements are compared on a deterministic sample of whole rows of about
/// this many elements (the same sample [`crate::nu_search`] uses); the winner then quantizes the
/// whole matrix.
pub const SELECT_MAX_SAMPLES: usize = crate::nu_search::SEARCH_MAX_SAMPLES;

/// How far a dequantized matrix is from the original: smaller is better. Both are row-major
/// `[rows, cols]` (`cols` is the input dimension of a linear layer `y = W x`). A NaN result
/// means "cannot judge"; such a candidate is never chosen.
pub trait SelectionError: Sync {
    /// The error of `dequantized` against `original`, both `[rows, cols]`.
    fn error(&self, original: &[f32], dequantized: &[f32], rows: usize, cols: usize) -> f64;
}

impl<F> SelectionError for F
where
    F: Fn(&[f32], &[f32], usize, usize) -> f64 + Sync,
{
    fn error(&self, original: &[f32], dequantized: &[f32], rows: usize, cols: usize) -> f64 {
        self(original, dequantized, rows, cols)
    }
}

/// `sum((q - w)^2)`, in f64: the weight error every fixed format is compared on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SquaredError;

impl SelectionError for SquaredError {
    fn error(&self, original: &[f32], dequantized: &[f32], _rows: usize, _cols: usize) -> f64 {
        original
            .iter()
            .zip(dequantized)
            .map(|(&a, &b)| {
                let d = a as f64 - b as f64;
                d * d
            })
            .sum()
    }
}

/// `sum_r sum_c h[c] (q[r,c] - w[r,c])^2`: squared error with one non-negative weight per input
/// column. With `h[c] = E[x_c^2]` over calibration activations this is the expected squared
/// error of the layer's output `W x` when the inputs are uncorrelated (the diagonal of `X^T X`).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnWeightedError {
    weights: Vec<f64>,
}

impl ColumnWeightedError {
    /// Weights must be finite and non-negative; their count is the matrices' `cols`.
    pub fn new(weights: Vec<f64>) -> Result<Self, FormatError> {
        if let Some((c, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(FormatError::ColumnWeight {
                column: c,
                weight: *w,
            });
        }
        Ok(Self { weights })
    }

    /// The column weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

impl SelectionError for ColumnWeightedError {
    /// NaN when the matrix does not have one column per weight.
    fn error(&self, original: &[f32], dequantized: &[f32], rows: usize, cols: usize) -> f64 {
        if cols != self.weights.len()
            || original.len() != rows * cols
            || dequantized.len() != original.len()
        {
            return f64::NAN;
        }
        let mut total = 0.0;
        for (a, b) in original.chunks(cols).zip(dequantized.chunks(cols)) {
            for ((&x, &y), &h) in a.iter().zip(b).zip(&self.weights) {
                let d = x as f64 - y as f64;
                total += h * d * d;
            }
        }
        total
    }
}

/// One candidate quantized and judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// Its error ([`SelectionError`]).
    pub error: f64,
    /// The candidate's quantized matrix.
    pub matrix: QuantizedMatrix,
}

/// Quantizes the row-major `[rows, cols]` matrix `w` with `cb` under `rule` and measures
/// `err(w, dequantized)`.
pub fn evaluate(
    w: &[f32],
    rows: usize,
    cols: usize,
    cb: &Codebook,
    q: &BlockQuantizer,
    rule: ScaleRule,
    err: &dyn SelectionError,
) -> Result<Evaluated, FormatError> {
    evaluate_with_screen(w, rows, cols, cb, q, rule, err, &PortableScreen)
}

/// [`evaluate`] with [`ScaleRule::Search`]'s candidates screened by `screen`; the same result
/// whatever the screen.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with_screen(
    w: &[f32],
    rows: usize,
    cols: usize,
    cb: &Codebook,
    q: &BlockQuantizer,
    rule: ScaleRule,
    err: &dyn SelectionError,
    screen: &dyn Screen,
) -> Result<Evaluated, FormatError> {
    let matrix = q.quantize_with_screen(cb, w, rows, cols, rule, screen)?;
    let deq = matrix.dequantize(cb);
    Ok(Evaluated {
        error: err.error(w, &deq, rows, cols),
        matrix,
    })
}

/// The index of the smallest error; the first one on ties, so the order of the candidates
/// decides between equals. NaN errors are never chosen; `None` when every error is NaN.
pub fn argmin(errors: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &e) in errors.iter().enumerate() {
        if e.is_nan() {
            continue;
        }
        if best.is_none_or(|b| e < errors[b]) {
            best = Some(i);
        }
    }
    best
}

/// The matrix itself when it has at most [`SELECT_MAX_SAMPLES`] elements, else a deterministic
/// stratified sample of whole rows of about that many elements: `(values, rows)`.
pub fn selection_sample(
    w: &[f32],
    rows: usize,
    cols: usize,
) -> (std::borrow::Cow<'_, [f32]>, usize) {
    if w.len() <= SELECT_MAX_SAMPLES || rows <= 1 {
        return (std::borrow::Cow::Borrowed(w), rows);
    }
    let s = crate::nu_search::sample_rows(w, rows, cols);
    let n = s.len() / cols.max(1);
    (std::borrow::Cow::Owned(s), n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Rng;
    use crate::{BlockSize, Format, ScaleDtype};

    fn quantizer() -> BlockQuantizer {
        BlockQuantizer {
            block: BlockSize::Elements(32),
            scale_dtype: ScaleDtype::F16,
        }
    }

    #[test]
    fn argmin_takes_the_first_smallest_and_skips_nan() {
        assert_eq!(argmin(&[3.0, 1.0, 2.0, 1.0]), Some(1));
        assert_eq!(argmin(&[f64::NAN, 2.0, f64::NAN, 0.5]), Some(3));
        assert_eq!(argmin(&[f64::NAN]), None);
        assert_eq!(argmin(&[]), None);
    }

    #[test]
    fn evaluate_measures_the_dequantized_matrix() {
        let mut rng = Rng::new(11);
        let (rows, cols) = (8, 96);
        let w: Vec<f32> = rng.normal_vec(rows * cols);
        let f: Format = "nf4".parse().unwrap();
        for rule in ScaleRule::ALL {
            let e = evaluate(
                &w,
                rows,
                cols,
                f.codebook(),
                &quantizer(),
                rule,
                &SquaredError,
            )
            .unwrap();
            let deq = e.matrix.dequantize(f.codebook());
            let direct: f64 = w
                .iter()
                .zip(&deq)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
            assert_eq!(e.error, direct);
            assert_eq!(
                e.matrix,
                quantizer()
                    .quantize_with(f.codebook(), &w, rows, cols, rule)
                    .unwrap()
            );
        }
    }

    #[test]
    fn column_weights_change_which_error_counts() {
        let w = [1.0f32, 1.0, 1.0, 1.0];
        let q = [1.5f32, 1.0, 1.0, 0.0]; // errors 0.25 in column 0, 1 in column 1
        let only_first = ColumnWeightedError::new(vec![1.0, 0.0]).unwrap();
        assert_eq!(only_first.error(&w, &q, 2, 2), 0.25);
        let only_second = ColumnWeightedError::new(vec![0.0, 2.0]).unwrap();
        assert_eq!(only_second.error(&w, &q, 2, 2), 2.0);
        let even = ColumnWeightedError::new(vec![1.0, 1.0]).unwrap();
        assert_eq!(even.error(&w, &q, 2, 2), SquaredError.error(&w, &q, 2, 2));
        assert!(even.error(&w, &q, 1, 4).is_nan(), "wrong column count");
        assert!(ColumnWeightedError::new(vec![1.0, -1.0]).is_err());
        assert!(ColumnWeightedError::new(vec![f64::NAN]).is_err());
    }

    #[test]
    fn closures_are_selection_errors() {
        let max_abs = |a: &[f32], b: &[f32], _: usize, _: usize| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs() as f64)
                .fold(0.0, f64::max)
        };
        let err: &dyn SelectionError = &max_abs;
        assert_eq!(err.error(&[1.0, 2.0], &[1.5, 2.0], 1, 2), 0.5);
    }

    #[test]
    fn large_matrices_are_sampled_by_whole_rows() {
        let (rows, cols) = (4096, 512);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i / cols) as f32).collect();
        let (s, n) = selection_sample(&w, rows, cols);
        assert_eq!(s.len(), n * cols);
        assert!(s.len() <= SELECT_MAX_SAMPLES && n > 1);
        let small = &w[..64 * cols];
        let (s, n) = selection_sample(small, 64, cols);
        assert!(matches!(s, std::borrow::Cow::Borrowed(_)));
        assert_eq!(n, 64);
    }
}
