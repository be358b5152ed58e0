//! The oracle: each mode's arithmetic written out plainly, summed in f64. Slow on purpose.

use crate::{Mode, QMatrix, ACT_BLOCK};
use tquant_formats::pack::code_at;

/// Weight `(r, c)` dequantized: `table[code] * scale`.
pub fn weight(q: &QMatrix, r: usize, c: usize) -> f32 {
    let code = code_at(q.row_codes(r), c) as usize;
    q.row_table(r)[code] * q.scale(r, c / q.block())
}

/// `y = x W^T` for `x: [n, cols]`, `y: [n, rows]`; sizes must match (checked by the caller).
pub fn matmul(q: &QMatrix, x: &[f32], n: usize, y: &mut [f32], mode: Mode) {
    for j in 0..n {
        let xr = &x[j * q.cols()..(j + 1) * q.cols()];
        for r in 0..q.rows() {
            y[j * q.rows() + r] = match mode {
                Mode::Exact => dot_exact(q, r, xr),
                Mode::Fast => dot_fast(q, r, xr),
            } as f32;
        }
    }
}

fn dot_exact(q: &QMatrix, r: usize, x: &[f32]) -> f64 {
    (0..q.cols())
        .map(|c| weight(q, r, c) as f64 * x[c] as f64)
        .sum()
}

/// The fast mode's definition: each weight block is cut into pieces of `ACT_BLOCK` elements;
/// a piece of `x` becomes `round_ties_even(x * 127 / amax)` with scale `amax / 127`, weights
/// become `table_i8[code]` with scale `table_step * block scale`, and each piece contributes
/// its exact integer dot product times the two scales.
fn dot_fast(q: &QMatrix, r: usize, x: &[f32]) -> f64 {
    let codes = q.row_codes(r);
    let mut total = 0.0f64;
    for b in 0..q.blocks_per_row() {
        let b0 = b * q.block();
        let b1 = (b0 + q.block()).min(q.cols());
        let ws = q.scale(r, b) as f64 * q.row_table_step(r) as f64;
        let mut s = b0;
        while s < b1 {
            let e = (s + ACT_BLOCK).min(b1);
            let amax = x[s..e].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if amax > 0.0 {
                let inv = 127.0f32 / amax;
                let xs = amax / 127.0;
                let idot: i64 = (s..e)
                    .map(|c| {
                        let xq = (x[c] * inv).round_ties_even().clamp(-127.0, 127.0) as i64;
                        q.row_table_i8(r)[code_at(codes, c) as usize] as i64 * xq
                    })
                    .sum();
                total += idot as f64 * xs as f64 * ws;
            }
            s = e;
        }
    }
    total
}

/// Scale of the f32 rounding budgets: `sum_k |w_k x_k|` for output `(j, r)` (exact weights).
pub fn magnitude(q: &QMatrix, x_row: &[f32], r: usize) -> f64 {
    (0..q.cols())
        .map(|c| (weight(q, r, c) as f64 * x_row[c] as f64).abs())
        .sum()
}

/// Worst-case distance between the fast mode's result for output `r` and exact arithmetic:
/// per term, half a table step (times the block scale) times `|x|`, plus half an activation
/// step times `|w|`, plus the product of the two half steps.
pub fn fast_error_bound(q: &QMatrix, x_row: &[f32], r: usize) -> f64 {
    let mut bound = 0.0f64;
    for b in 0..q.blocks_per_row() {
        let b0 = b * q.block();
        let b1 = (b0 + q.block()).min(q.cols());
        let half_t = 0.5 * q.row_table_step(r) as f64 * q.scale(r, b).abs() as f64;
        let mut s = b0;
        while s < b1 {
            let e = (s + ACT_BLOCK).min(b1);
            let amax = x_row[s..e].iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            let half_x = 0.5 * amax / 127.0;
            let table_exact = q.row_table_i8_is_exact(r);
            let dt = if table_exact { 0.0 } else { half_t };
            for (c, xv) in x_row.iter().enumerate().take(e).skip(s) {
                let w = weight(q, r, c).abs() as f64;
                bound += dt * xv.abs() as f64 + half_x * w + dt * half_x;
            }
            s = e;
        }
    }
    bound
}

/// The dense f32 product, summed in f64.
pub fn matmul_f32(w: &[f32], rows: usize, cols: usize, x: &[f32], n: usize, y: &mut [f32]) {
    for j in 0..n {
        for r in 0..rows {
            y[j * rows + r] = (0..cols)
                .map(|c| w[r * cols + c] as f64 * x[j * cols + c] as f64)
                .sum::<f64>() as f32;
        }
    }
}

/// The bf16-weight product, summed in f64: `w` widened exactly; in fast mode `x` rounded to
/// bf16 first (see `bf16`).
pub fn matmul_bf16(
    w: &[u16],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: Mode,
) {
    let act = |v: f32| match mode {
        Mode::Exact => v,
        Mode::Fast => crate::widen::bf16_to_f32(crate::widen::f32_to_bf16(v)),
    };
    for j in 0..n {
        for r in 0..rows {
            y[j * rows + r] = (0..cols)
                .map(|c| {
                    crate::widen::bf16_to_f32(w[r * cols + c]) as f64 * act(x[j * cols + c]) as f64
                })
                .sum::<f64>() as f32;
        }
    }
}

/// The f16-weight product, summed in f64: `w` widened exactly (both modes: see `f16`).
pub fn matmul_f16(w: &[u16], rows: usize, cols: usize, x: &[f32], n: usize, y: &mut [f32]) {
    for j in 0..n {
        for r in 0..rows {
            y[j * rows + r] = (0..cols)
                .map(|c| crate::widen::f16_to_f32(w[r * cols + c]) as f64 * x[j * cols + c] as f64)
                .sum::<f64>() as f32;
        }
    }
}
