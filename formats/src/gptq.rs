//! GPTQ: block quantization with error feedback from a layer's input statistics
//! (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
//! Transformers", ICLR 2023, Algorithm 1).
//!
//! A linear layer `y = W x` sees inputs `x` whose second moment `H = sum x x^T` (over calibration
//! tokens) says which weight errors matter: the output error of a quantized `Q` is
//! `tr((W - Q) H (W - Q)^T)` ([`weighted_error`]). GPTQ quantizes the columns one at a time and,
//! after each, moves the rounding error onto the columns not yet quantized, along the directions
//! `H^-1` says the inputs are correlated in, so later roundings compensate earlier ones.
//!
//! Nothing here depends on the codebook's structure: a column is rounded to the nearest value of
//! any [`Codebook`] at the block's scale, exactly as [`BlockQuantizer`] encodes, so the output is
//! an ordinary [`QuantizedMatrix`] in tquant's layout (same codes, scales and kernels). Each
//! block's scale is chosen by the block quantizer's own rule when the first of its columns is
//! reached, from the weights as error feedback has updated them by then.
//!
//! With `H` proportional to the identity there is no feedback and the result is bit-identical to
//! [`BlockQuantizer::quantize_with`].

use crate::block::{blocks_per_row, check_matrix_len, encode_block};
use crate::pack::{pack_row, row_bytes};
use crate::screen::{PortableScreen, Screen};
use crate::{BlockQuantizer, Codebook, FormatError, QuantizedMatrix, ScaleRule};

/// Default relative damping: `lambda = 0.01 * mean(diag(H))`, GPTQ's `percdamp`.
pub const DEFAULT_DAMP: f64 = 0.01;
/// Each failed Cholesky factorization retries with ten times the damping, this many times.
const DAMP_RETRIES: usize = 6;
/// Rows quantized together, so each row of the factor is read once per tile from cache.
const ROW_TILE: usize = 16;

/// How GPTQ runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqOptions {
    /// Relative damping added to the diagonal of `H`: `damp * mean(diag(H))`. It makes a
    /// singular `H` (fewer tokens than columns, dead inputs) invertible and limits how far the
    /// error feedback trusts directions the calibration data barely covers.
    pub damp: f64,
    /// Quantize columns in order of decreasing `H_ii` (GPTQ's "act-order"): the columns with the
    /// largest inputs first, while many columns are left to absorb their error. Blocks and
    /// scales stay on the original columns; a block's scale is set when the first of its
    /// columns comes up in the new order.
    pub act_order: bool,
    /// Rule for each block's scale ([`ScaleRule::Search`] searches it on the updated weights).
    pub rule: ScaleRule,
}

impl Default for GptqOptions {
    fn default() -> Self {
        Self {
            damp: DEFAULT_DAMP,
            act_order: false,
            rule: ScaleRule::Absmax,
        }
    }
}

/// The factor GPTQ needs for one `H`, reusable for every matrix with the same inputs (q and
/// kv_a projections, gate and up, every format tried on one matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct GptqFactor {
    dim: usize,
    /// Column order: `order[k]` is the column quantized at step `k`.
    order: Vec<usize>,
    /// Upper Cholesky factor `U` of `(P H P^T + lambda I)^-1` (`U^T U`), row-major, in the
    /// permuted order; row `k` holds the feedback weights of step `k`.
    u: Vec<f64>,
    /// Relative damping actually used (larger than asked when the factorization needed it);
    /// `None` when `H` had no usable entry and the identity stood in (plain rounding).
    damp_used: Option<f64>,
}

impl GptqFactor {
    /// Factors a symmetric positive semi-definite `dim x dim` matrix `h` (row-major).
    ///
    /// Dead inputs (`H_ii <= 0`) get their row and column cleared and a unit diagonal, so their
    /// columns are rounded without feedback. If the damped matrix does not factor (round-off on
    /// a nearly singular `H`) the damping grows tenfold and the factorization is retried; if it
    /// still fails, or `H` is all zero, the identity is used. Only a wrong size or a non-finite
    /// entry is an error: this never panics on a singular `H`.
    pub fn new(h: &[f64], dim: usize, opts: &GptqOptions) -> Result<Self, FormatError> {
        if dim.checked_mul(dim) != Some(h.len()) {
            return Err(FormatError::MomentLength {
                dim,
                want: dim * dim,
                len: h.len(),
            });
        }
        if let Some(v) = h.iter().find(|v| !v.is_finite()) {
            return Err(FormatError::MomentValue { value: *v });
        }
        if !(opts.damp.is_finite() && opts.damp >= 0.0) {
            return Err(FormatError::Damping { damp: opts.damp });
        }
        let diag = |i: usize| h[i * dim + i];
        let mut order: Vec<usize> = (0..dim).collect();
        if opts.act_order {
            // Stable: equal diagonals keep their column order.
            order.sort_by(|&a, &b| diag(b).total_cmp(&diag(a)));
        }
        let live: Vec<bool> = (0..dim).map(|i| diag(i) > 0.0).collect();
        // P H P^T with dead inputs decoupled.
        let mut hp = vec![0.0f64; dim * dim];
        for (a, &i) in order.iter().enumerate() {
            for (b, &j) in order.iter().enumerate() {
                hp[a * dim + b] = if live[i] && live[j] {
                    h[i * dim + j]
                } else if i == j {
                    1.0
                } else {
                    0.0
                };
            }
        }
        let live_diag: Vec<f64> = (0..dim).filter(|&i| live[i]).map(diag).collect();
        let mean = live_diag.iter().sum::<f64>() / live_diag.len().max(1) as f64;
        if live_diag.is_empty() || mean <= 0.0 || !mean.is_finite() {
            return Ok(Self::identity(order));
        }
        let mut damp = opts.damp;
        for _ in 0..=DAMP_RETRIES {
            let mut m = hp.clone();
            let lambda = damp * mean;
            for i in 0..dim {
                m[i * dim + i] += lambda;
            }
            if let Some(u) = inverse_upper_factor(&m, dim) {
                return Ok(Self {
                    dim,
                    order,
                    u,
                    damp_used: Some(damp),
                });
            }
            damp = if damp > 0.0 { damp * 10.0 } else { 1e-6 };
        }
        Ok(Self::identity(order))
    }

    fn identity(order: Vec<usize>) -> Self {
        let dim = order.len();
        let mut u = vec![0.0; dim * dim];
        for i in 0..dim {
            u[i * dim + i] = 1.0;
        }
        Self {
            dim,
            order,
            u,
            damp_used: None,
        }
    }

    /// Columns of the matrices this factor serves.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The relative damping used, or `None` when `H` was unusable and rounding is plain.
    pub fn damp_used(&self) -> Option<f64> {
        self.damp_used
    }

    /// Quantizes a row-major `[rows, cols]` matrix (`cols == dim`) with error feedback.
    pub fn quantize(
        &self,
        quantizer: &BlockQuantizer,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
        rule: ScaleRule,
    ) -> Result<QuantizedMatrix, FormatError> {
        self.quantize_with_screen(quantizer, cb, w, rows, cols, rule, &PortableScreen)
    }

    /// [`GptqFactor::quantize`] with [`ScaleRule::Search`]'s candidates screened by `screen` (a
    /// vectorized one lives in `tquant-kernels`); the same result whatever the screen.
    #[allow(clippy::too_many_arguments)]
    pub fn quantize_with_screen(
        &self,
        quantizer: &BlockQuantizer,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
        rule: ScaleRule,
        screen: &dyn Screen,
    ) -> Result<QuantizedMatrix, FormatError> {
        check_matrix_len(w.len(), rows, cols)?;
        if cols != self.dim {
            return Err(FormatError::MomentColumns {
                cols,
                dim: self.dim,
            });
        }
        quantizer.check(cb)?;
        let block = quantizer.block.len_for(cols);
        let nb = blocks_per_row(cols, block);
        let rb = row_bytes(cols);
        let mut codes = vec![0u8; rows * rb];
        let mut scales = vec![0.0f32; rows * nb];
        for r0 in (0..rows).step_by(ROW_TILE) {
            let tile = ROW_TILE.min(rows - r0);
            let (row_codes, row_scales) = self.quantize_tile(
                quantizer,
                cb,
                &w[r0 * cols..(r0 + tile) * cols],
                tile,
                block,
                rule,
                screen,
            );
            for t in 0..tile {
                let r = r0 + t;
                pack_row(
                    &row_codes[t * cols..(t + 1) * cols],
                    &mut codes[r * rb..(r + 1) * rb],
                );
                scales[r * nb..(r + 1) * nb].copy_from_slice(&row_scales[t * nb..(t + 1) * nb]);
            }
        }
        let mut scale_bytes = Vec::with_capacity(rows * nb * quantizer.scale_dtype.size());
        for &s in &scales {
            quantizer.scale_dtype.push_bytes(s, &mut scale_bytes);
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            block,
            scale_dtype: quantizer.scale_dtype,
            codes,
            scales: scale_bytes,
        })
    }

    /// GPTQ on `tile` consecutive rows: codes `[tile, cols]` in column order and scales
    /// `[tile, blocks]`.
    #[allow(clippy::too_many_arguments)]
    fn quantize_tile(
        &self,
        quantizer: &BlockQuantizer,
        cb: &Codebook,
        w: &[f32],
        tile: usize,
        block: usize,
        rule: ScaleRule,
        screen: &dyn Screen,
    ) -> (Vec<u8>, Vec<f32>) {
        let n = self.dim;
        let nb = blocks_per_row(n, block);
        // Working weights in the quantization order, f64 so feedback does not accumulate
        // rounding; `pos[c]` is where column c sits.
        let mut pos = vec![0usize; n];
        for (k, &c) in self.order.iter().enumerate() {
            pos[c] = k;
        }
        let mut work = vec![0.0f64; tile * n];
        for t in 0..tile {
            for (k, &c) in self.order.iter().enumerate() {
                work[t * n + k] = w[t * n + c] as f64;
            }
        }
        let mut codes = vec![0u8; tile * n];
        let mut scales = vec![0.0f32; tile * nb];
        let mut scaled = vec![false; tile * nb];
        let mut block_vals = vec![0.0f32; block];
        let mut err = vec![0.0f64; tile];
        for k in 0..n {
            let c = self.order[k];
            let b = c / block;
            let (c0, c1) = (b * block, ((b + 1) * block).min(n));
            let d = self.u[k * n + k];
            for t in 0..tile {
                let row = &work[t * n..(t + 1) * n];
                if !scaled[t * nb + b] {
                    // The block's scale, from its weights as feedback has left them so far.
                    let vals = &mut block_vals[..c1 - c0];
                    for (v, col) in vals.iter_mut().zip(c0..c1) {
                        *v = row[pos[col]] as f32;
                    }
                    scales[t * nb + b] = quantizer.scale_for_with(cb, vals, rule, screen);
                    scaled[t * nb + b] = true;
                }
                let s = scales[t * nb + b];
                let x = row[k] as f32;
                let mut code = [0u8];
                encode_block(cb, &[x], s, &mut code);
                codes[t * n + c] = code[0];
                let q = cb.decode(code[0]) * s;
                err[t] = (row[k] - q as f64) / d;
            }
            // Feedback onto the columns still to come: w[j] -= err * U[k, j].
            let urow = &self.u[k * n + k + 1..(k + 1) * n];
            for t in 0..tile {
                let e = err[t];
                if e != 0.0 {
                    let rest = &mut work[t * n + k + 1..(t + 1) * n];
                    for (x, &u) in rest.iter_mut().zip(urow) {
                        *x -= e * u;
                    }
                }
            }
        }
        (codes, scales)
    }
}

/// Quantizes `w` (`[rows, cols]`, row-major) with GPTQ for the input second moment `h`
/// (`cols x cols`, row-major). See [`GptqFactor`] to reuse one factorization.
pub fn gptq_quantize(
    quantizer: &BlockQuantizer,
    cb: &Codebook,
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    opts: &GptqOptions,
) -> Result<QuantizedMatrix, FormatError> {
    GptqFactor::new(h, cols, opts)?.quantize(quantizer, cb, w, rows, cols, opts.rule)
}

/// `tr((W - Q) H (W - Q)^T)`: the summed squared output error over the calibration inputs whose
/// second moment is `h` (`cols x cols`), for weights `w` and their quantized values `q`, both
/// `[rows, cols]` row-major.
pub fn weighted_error(w: &[f32], q: &[f32], rows: usize, cols: usize, h: &[f64]) -> f64 {
    debug_assert_eq!(w.len(), rows * cols);
    debug_assert_eq!(q.len(), rows * cols);
    debug_assert_eq!(h.len(), cols * cols);
    let mut d = vec![0.0f64; cols];
    let mut total = 0.0;
    for r in 0..rows {
        for (c, dc) in d.iter_mut().enumerate() {
            *dc = w[r * cols + c] as f64 - q[r * cols + c] as f64;
        }
        for (i, &di) in d.iter().enumerate() {
            if di != 0.0 {
                let hrow = &h[i * cols..(i + 1) * cols];
                total += di * hrow.iter().zip(&d).map(|(&a, &b)| a * b).sum::<f64>();
            }
        }
    }
    total
}

/// Lower Cholesky factor `L` (`L L^T = a`) of a symmetric `n x n` matrix, or `None` when it is
/// not (numerically) positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let djj = d.sqrt();
        l[j * n + j] = djj;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            let (li, lj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            s -= li.iter().zip(lj).map(|(&x, &y)| x * y).sum::<f64>();
            l[i * n + j] = s / djj;
        }
    }
    Some(l)
}

/// The upper factor `U` with `U^T U = a^-1`, for symmetric positive definite `a`: Cholesky,
/// the inverse from it, and the Cholesky factor of the inverse, transposed (GPTQ's
/// `cholesky(cholesky_inverse(cholesky(H)), upper=True)`).
fn inverse_upper_factor(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, n)?;
    // L^-1, lower triangular, by forward substitution column by column.
    let mut li = vec![0.0f64; n * n];
    for j in 0..n {
        li[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let mut s = 0.0;
            for k in j..i {
                s += l[i * n + k] * li[k * n + j];
            }
            li[i * n + j] = -s / l[i * n + i];
        }
    }
    // a^-1 = L^-T L^-1: entry (i, j) = sum_{k >= max(i, j)} li[k, i] li[k, j].
    let mut inv = vec![0.0f64; n * n];
    for k in 0..n {
        let row = &li[k * n..k * n + k + 1];
        for i in 0..=k {
            let x = row[i];
            if x != 0.0 {
                for j in 0..=i {
                    inv[i * n + j] += x * row[j];
                }
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            inv[j * n + i] = inv[i * n + j];
        }
    }
    let l2 = cholesky(&inv, n)?;
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = l2[i * n + j];
        }
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_satisfies_u_transpose_u_times_h_is_identity() {
        let n = 5;
        // A well-conditioned SPD matrix: B B^T + I.
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
            .collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                h[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let u = inverse_upper_factor(&h, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "upper triangular");
            }
        }
        // (U^T U) H = I.
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0;
                for k in 0..n {
                    let utu: f64 = (0..n).map(|m| u[m * n + i] * u[m * n + k]).sum();
                    s += utu * h[k * n + j];
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-9, "({i}, {j}): {s}");
            }
        }
    }

    #[test]
    fn cholesky_refuses_indefinite_matrices() {
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(cholesky(&[0.0], 1).is_none());
        assert!(cholesky(&[4.0], 1).is_some());
    }
}
