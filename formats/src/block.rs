//! Block scaling: each row is cut into blocks along its length; each block gets one scale.

use crate::pack::{pack_row, row_bytes};
use crate::{Codebook, FormatError, ScaleDtype};
use std::fmt;
use std::str::FromStr;

/// Smallest and largest supported block length.
pub const MIN_BLOCK: usize = 16;
pub const MAX_BLOCK: usize = 4096;

/// How many consecutive elements of a row share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockSize {
    /// `n` elements (16..=4096); a row whose length is not a multiple of `n` ends in a short block.
    Elements(usize),
    /// One scale per row.
    Row,
}

impl BlockSize {
    pub fn new(n: usize) -> Result<Self, FormatError> {
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&n) {
            return Err(FormatError::Parse(format!(
                "block size {n} is not supported: use {MIN_BLOCK}..={MAX_BLOCK} or 'row'"
            )));
        }
        Ok(Self::Elements(n))
    }

    /// The block length used for rows of `cols` elements (`cols` itself for `Row`, at least 1).
    pub fn len_for(self, cols: usize) -> usize {
        match self {
            Self::Elements(n) => n,
            Self::Row => cols.max(1),
        }
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elements(n) => write!(f, "{n}"),
            Self::Row => f.write_str("row"),
        }
    }
}

impl FromStr for BlockSize {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "row" {
            return Ok(Self::Row);
        }
        let n: usize = s.parse().map_err(|_| {
            FormatError::Parse(format!("block size '{s}' is not a number or 'row'"))
        })?;
        Self::new(n)
    }
}

/// Number of blocks in a row of `cols` elements with blocks of `block` elements.
#[inline]
pub fn blocks_per_row(cols: usize, block: usize) -> usize {
    cols.div_ceil(block)
}

/// A quantized matrix in tquant's layout: packed codes ([`crate::pack`]) and one scale per block,
/// row-major `[rows, blocks_per_row]`, stored as `scale_dtype` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    /// Block length in elements (the row length for whole-row blocks).
    pub block: usize,
    pub scale_dtype: ScaleDtype,
    pub codes: Vec<u8>,
    pub scales: Vec<u8>,
}

/// Options of the block quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQuantizer {
    pub block: BlockSize,
    pub scale_dtype: ScaleDtype,
}

impl BlockQuantizer {
    /// The paper's rule: `scale = absmax / max|values|`, rounded to the scale dtype.
    pub fn block_scale(&self, cb: &Codebook, block: &[f32]) -> f32 {
        let absmax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if absmax == 0.0 || !absmax.is_finite() {
            return 0.0;
        }
        match self.scale_dtype {
            ScaleDtype::E8m0 => {
                let e = ScaleDtype::e8m0_exponent(absmax, cb.max_abs());
                crate::scale::e8m0_to_f32((e + 127).clamp(0, 254) as u8)
            }
            d => d.round(absmax / cb.max_abs()),
        }
    }

    /// Quantizes a row-major `[rows, cols]` matrix.
    pub fn quantize(
        &self,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<QuantizedMatrix, FormatError> {
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(FormatError::Shape(format!(
                "{} values do not make a [{rows}, {cols}] matrix",
                w.len()
            )));
        }
        let block = self.block.len_for(cols);
        let nb = blocks_per_row(cols, block);
        let rb = row_bytes(cols);
        let mut codes = vec![0u8; rows * rb];
        let mut scales = Vec::with_capacity(rows * nb * self.scale_dtype.size());
        let mut row_codes = vec![0u8; cols];
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            for (b, chunk) in row.chunks(block).enumerate() {
                let s = self.block_scale(cb, chunk);
                self.scale_dtype.push_bytes(s, &mut scales);
                encode_block(
                    cb,
                    chunk,
                    s,
                    &mut row_codes[b * block..b * block + chunk.len()],
                );
            }
            pack_row(&row_codes, &mut codes[r * rb..(r + 1) * rb]);
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            block,
            scale_dtype: self.scale_dtype,
            codes,
            scales,
        })
    }
}

/// Encodes one block with a given (already rounded) scale. A zero scale gives the zero code.
pub fn encode_block(cb: &Codebook, block: &[f32], scale: f32, out: &mut [u8]) {
    if scale == 0.0 || !scale.is_finite() {
        out.fill(cb.encode(0.0));
        return;
    }
    let inv = 1.0 / scale;
    for (o, &x) in out.iter_mut().zip(block) {
        *o = cb.encode(x * inv);
    }
}

impl QuantizedMatrix {
    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        blocks_per_row(self.cols, self.block)
    }

    /// Scale of block `b` of row `r`.
    pub fn scale(&self, r: usize, b: usize) -> f32 {
        self.scale_dtype
            .read(&self.scales, r * self.blocks_per_row() + b)
    }

    /// Dequantizes into a row-major `[rows, cols]` buffer: `values[code] * scale`.
    pub fn dequantize(&self, cb: &Codebook) -> Vec<f32> {
        let rb = row_bytes(self.cols);
        let mut out = vec![0.0f32; self.rows * self.cols];
        for r in 0..self.rows {
            let packed = &self.codes[r * rb..(r + 1) * rb];
            for (c, o) in out[r * self.cols..(r + 1) * self.cols]
                .iter_mut()
                .enumerate()
            {
                let s = self.scale(r, c / self.block);
                *o = cb.decode(crate::pack::code_at(packed, c)) * s;
            }
        }
        out
    }

    /// Storage bits per weight, codes and scales together (codes at 4 bits each).
    pub fn bits_per_weight(&self) -> f64 {
        let n = (self.rows * self.cols) as f64;
        ((self.codes.len() + self.scales.len()) * 8) as f64 / n
    }
}
