//! The portable path: plain Rust written so the compiler vectorizes it for any target. Each
//! weight row is decoded once into a small buffer (f32 values or int8 codes through a 256-entry
//! table of byte pairs) and then dotted with every activation row.
//!
//! Also the tails the SIMD paths leave: elements past their last whole chunk.

use crate::act::FastActs;
use crate::QMatrix;
use tquant_formats::pack::code_at;

/// Exact mode, rows `r0..r0 + out.len() / n`; `out` is `[row][j]`.
pub(crate) fn qrows_exact(q: &QMatrix, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    let cols = q.cols();
    let mut lut = pair_lut(q.row_table(r0));
    let mut w = vec![0.0f32; 2 * cols.div_ceil(2)];
    let mut scales = vec![0.0f32; q.blocks_per_row()];
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let r = r0 + i;
        if q.has_row_tables() && i > 0 {
            lut = pair_lut(q.row_table(r));
        }
        for (pair, &b) in w.chunks_exact_mut(2).zip(q.row_codes(r)) {
            pair.copy_from_slice(&lut[b as usize]);
        }
        row_scales(q, r, &mut scales);
        for (wb, &s) in w[..cols].chunks_mut(q.block()).zip(&scales) {
            wb.iter_mut().for_each(|v| *v *= s);
        }
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot_f32(&w[..cols], &x[j * cols..(j + 1) * cols]);
        }
    }
}

/// Fast mode, rows `r0..r0 + out.len() / n`; `out` is `[row][j]`.
pub(crate) fn qrows_fast(q: &QMatrix, a: &FastActs, n: usize, r0: usize, out: &mut [f32]) {
    let cols = q.cols();
    let mut lut = [[0i8; 2]; 256];
    let fill = |lut: &mut [[i8; 2]; 256], t: &[i8; 16]| {
        for (b, e) in lut.iter_mut().enumerate() {
            *e = [t[b & 15], t[b >> 4]];
        }
    };
    fill(&mut lut, q.row_table_i8(r0));
    let mut w = vec![0i8; 2 * cols.div_ceil(2)];
    let mut scales = vec![0.0f32; q.blocks_per_row()];
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let r = r0 + i;
        if q.has_row_tables() && i > 0 {
            fill(&mut lut, q.row_table_i8(r));
        }
        for (pair, &b) in w.chunks_exact_mut(2).zip(q.row_codes(r)) {
            pair.copy_from_slice(&lut[b as usize]);
        }
        row_scales(q, r, &mut scales);
        for (j, y) in o.iter_mut().enumerate() {
            let xq = a.row_xq(j);
            let ps = a.row_piece_scale(j);
            let mut acc = 0.0f32;
            for (p, &xs) in a.pieces.iter().zip(ps) {
                let d = dot_i8(&w[p.start..p.start + p.len], &xq[p.start..p.start + p.len]);
                acc += d as f32 * (xs * scales[p.block]);
            }
            *y = acc * q.row_table_step(r);
        }
    }
}

/// The scales of row `r` as f32.
pub(crate) fn row_scales(q: &QMatrix, r: usize, out: &mut [f32]) {
    let bytes = q.row_scales(r);
    for (b, s) in out.iter_mut().enumerate() {
        *s = q.scale_dtype().read(bytes, b);
    }
}

/// `[table[lo], table[hi]]` for every byte.
fn pair_lut(t: &[f32; 16]) -> [[f32; 2]; 256] {
    let mut lut = [[0.0f32; 2]; 256];
    for (b, e) in lut.iter_mut().enumerate() {
        *e = [t[b & 15], t[b >> 4]];
    }
    lut
}

/// f32 dot product with 16 independent accumulators (vectorizes without reassociation).
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, at) = a.as_chunks::<16>();
    let (bc, bt) = b[..a.len()].as_chunks::<16>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in at.iter().zip(bt) {
        tail += x * y;
    }
    let mut w = 8;
    while w > 0 {
        for k in 0..w {
            acc[k] += acc[k + w];
        }
        w /= 2;
    }
    acc[0] + tail
}

#[inline]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Row `r`'s weights past `from` (table value times block scale, `cols - from` values) into
/// `out`: a SIMD tile decodes its rows' tails once and reuses them for every activation row.
pub(crate) fn decode_tail_exact(
    q: &QMatrix,
    r: usize,
    scales: &[f32],
    from: usize,
    out: &mut [f32],
) {
    let codes = q.row_codes(r);
    let t = q.row_table(r);
    for (c, o) in (from..q.cols()).zip(out.iter_mut()) {
        *o = t[code_at(codes, c) as usize] * scales[c / q.block()];
    }
}

/// Exact-mode sum over a row's tail: `w_tail` from [`decode_tail_exact`], `x_tail` the
/// activations of the same columns (natural order), for SIMD tails.
pub(crate) fn tail_exact(w_tail: &[f32], x_tail: &[f32]) -> f32 {
    w_tail.iter().zip(x_tail).map(|(w, x)| w * x).sum()
}

/// Dense f32 rows `r0..r0 + out.len() / n`; `out` is `[row][j]`.
pub(crate) fn f32_rows(w: &[f32], cols: usize, x: &[f32], n: usize, r0: usize, out: &mut [f32]) {
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let wr = &w[(r0 + i) * cols..(r0 + i + 1) * cols];
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot_f32(wr, &x[j * cols..(j + 1) * cols]);
        }
    }
}
