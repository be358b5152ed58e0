//! TEMPORARY stand-in with the announced tquant-kernels API, until that crate lands; deleted then.

use rayon::prelude::*;
use tquant_formats::pack::{code_at, row_bytes};
use tquant_formats::ScaleDtype;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exact,
    Fast,
}

#[derive(Debug)]
pub struct QMatrix<'a> {
    rows: usize,
    cols: usize,
    block: usize,
    codes: &'a [u8],
    scales: &'a [u8],
    scale_dtype: ScaleDtype,
    table: &'a [f32],
}

impl<'a> QMatrix<'a> {
    pub fn new(
        rows: usize,
        cols: usize,
        block: usize,
        codes: &'a [u8],
        scales: &'a [u8],
        scale_dtype: ScaleDtype,
        table: &'a [f32],
    ) -> Result<Self, String> {
        if codes.len() != rows * row_bytes(cols)
            || scales.len() != rows * cols.div_ceil(block) * scale_dtype.size()
            || table.len() != 16
        {
            return Err("bad sizes".into());
        }
        Ok(Self {
            rows,
            cols,
            block,
            codes,
            scales,
            scale_dtype,
            table,
        })
    }
}

pub fn matmul(w: &QMatrix<'_>, x: &[f32], n: usize, y: &mut [f32], _mode: Mode) {
    let rb = row_bytes(w.cols);
    let nb = w.cols.div_ceil(w.block);
    let mut row = vec![0.0f32; w.rows * w.cols];
    row.par_chunks_mut(w.cols).enumerate().for_each(|(r, out)| {
        let packed = &w.codes[r * rb..(r + 1) * rb];
        for (c, o) in out.iter_mut().enumerate() {
            let s = w.scale_dtype.read(w.scales, r * nb + c / w.block);
            *o = w.table[code_at(packed, c) as usize] * s;
        }
    });
    matmul_f32(&row, w.rows, w.cols, x, n, y);
}

pub fn matmul_f32(w: &[f32], rows: usize, cols: usize, x: &[f32], n: usize, y: &mut [f32]) {
    y.par_chunks_mut(rows).enumerate().for_each(|(i, yi)| {
        let xi = &x[i * cols..(i + 1) * cols];
        for (r, o) in yi.iter_mut().enumerate() {
            let wr = &w[r * cols..(r + 1) * cols];
            *o = wr.iter().zip(xi).map(|(a, b)| a * b).sum();
        }
    });
    let _ = n;
}
