//! q8_0 weights as the kernels see them (a leaf below `int8` and `x86_64`): the borrowed
//! matrix, the fast mode's int8 activations and the row-kernel signature.

use crate::KernelError;
use half::f16;

fn check_len(what: &'static str, got: usize, a: usize, b: usize) -> Result<(), KernelError> {
    let want = a
        .checked_mul(b)
        .ok_or(KernelError::Overflow { rows: a, cols: b })?;
    if got != want {
        return Err(KernelError::Length { what, got, want });
    }
    Ok(())
}

/// Elements per q8_0 block.
pub const Q8_BLOCK: usize = 32;

/// A borrowed q8_0 matrix: `codes` `[rows, cols]`, `scales` f16 bits `[rows, cols / 32
/// rounded up]`.
#[derive(Debug, Clone, Copy)]
pub struct Q8Matrix<'a> {
    rows: usize,
    cols: usize,
    codes: &'a [i8],
    scales: &'a [u16],
}

impl<'a> Q8Matrix<'a> {
    /// A view, after checking the lengths against the shape.
    pub fn new(
        rows: usize,
        cols: usize,
        codes: &'a [i8],
        scales: &'a [u16],
    ) -> Result<Self, KernelError> {
        check_len("q8_0 codes [rows, cols]", codes.len(), rows, cols)?;
        check_len(
            "q8_0 scales [rows, blocks]",
            scales.len(),
            rows,
            cols.div_ceil(Q8_BLOCK),
        )?;
        Ok(Self {
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(Q8_BLOCK)
    }
    /// The codes of row `r`.
    pub fn row_codes(&self, r: usize) -> &'a [i8] {
        &self.codes[r * self.cols..(r + 1) * self.cols]
    }
    /// The f16 scale bits of row `r`.
    pub fn row_scales(&self, r: usize) -> &'a [u16] {
        let b = self.blocks_per_row();
        &self.scales[r * b..(r + 1) * b]
    }
    /// Row `r` dequantized into `out` (`cols` values): what an embedding lookup reads.
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let sc = self.row_scales(r);
        for (c, (o, &q)) in out.iter_mut().zip(self.row_codes(r)).enumerate() {
            *o = q as f32 * f16_to_f32(sc[c / Q8_BLOCK]);
        }
    }
    /// Bytes of codes and scales.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 2 * self.scales.len()
    }
}

/// The f32 value of f16 bits.
#[inline]
pub fn f16_to_f32(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}

/// Activations of a fast-mode product: per row, `blocks * 32` int8 values (zero past `cols`)
/// and one f32 scale per block.
pub(crate) struct Q8Acts {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub blocks: usize,
}

impl Q8Acts {
    /// Quantizes `x` (`[n, cols]`) per 32-element block: scale `amax / 127`, round to nearest
    /// even.
    pub fn new(x: &[f32], n: usize, cols: usize) -> Self {
        let blocks = cols.div_ceil(Q8_BLOCK);
        let mut codes = vec![0i8; n * blocks * Q8_BLOCK];
        let mut scales = vec![0.0f32; n * blocks];
        for j in 0..n {
            let row = &x[j * cols..(j + 1) * cols];
            for (b, xb) in row.chunks(Q8_BLOCK).enumerate() {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let out = &mut codes[(j * blocks + b) * Q8_BLOCK..];
                for (o, &v) in out.iter_mut().zip(xb) {
                    // |v * id| <= 127 (or not finite), where `round_even` is `round_ties_even`
                    // without a library call.
                    *o = crate::act::round_even(v * id).clamp(-127.0, 127.0) as i8;
                }
                scales[j * blocks + b] = d;
            }
        }
        Self {
            codes,
            scales,
            blocks,
        }
    }

    /// Block `b` of activation row `j`: 32 codes and the scale.
    pub fn block(&self, j: usize, b: usize) -> (&[i8], f32) {
        let i = j * self.blocks + b;
        (
            &self.codes[i * Q8_BLOCK..(i + 1) * Q8_BLOCK],
            self.scales[i],
        )
    }
}

/// Activations as a kernel takes them.
pub(crate) enum Q8In<'x> {
    /// f32 activations, `[n, cols]` (exact mode).
    Exact(&'x [f32]),
    /// int8 activations (fast mode).
    Fast(Q8Acts),
}

/// A row kernel: rows `r0..r0 + out.len() / n` into `out` (`[row][j]`). Unsafe because SIMD
/// kernels may only run where their ISA is available.
pub(crate) type Q8Rows = unsafe fn(&Q8Matrix, &Q8In, usize, usize, &mut [f32]);
