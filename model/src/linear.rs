//! Linear layers `y = x W^T` over float or packed 4-bit weights; every product goes through the
//! kernels crate. bf16 weights stay bf16 (borrowed from the checkpoint's map where possible) and
//! run through the bf16 kernels: exact mode widens them in registers (f32 arithmetic), fast mode
//! rounds activations to bf16 (`vdpbf16ps` where the CPU has it). f16 weights stay f16 the same
//! way and run through the f16 kernels (widened in registers, f32 arithmetic in both modes).
//!
//! A quantized matrix holds its packed codes and scales through [`Packed`]: either bytes owned in
//! memory (a model quantized on the fly) or a handle to a mapped checkpoint, from which a kernel
//! view is built per call, so weights read from a file are never copied or dequantized.

use crate::kernels::{self, Mode, QMatrix};
use crate::ModelError;
use std::sync::Arc;
use tquant_formats::pack::{code_at, row_bytes};
use tquant_formats::ScaleDtype;

/// Where packed codes and scales live.
#[derive(Debug, Clone)]
pub enum Packed {
    /// In memory (e.g. quantized by `tquant report`).
    Owned {
        /// Packed codes.
        codes: Arc<[u8]>,
        /// Scale bytes.
        scales: Arc<[u8]>,
    },
    /// Tensor `name` of a memory-mapped checkpoint, borrowed afresh for each product.
    Mapped {
        /// The checkpoint.
        ckpt: Arc<tquant_convert::Checkpoint>,
        /// The tensor's name in it.
        name: Arc<str>,
    },
}

impl Packed {
    /// Codes and scales held in memory.
    pub fn owned(codes: Vec<u8>, scales: Vec<u8>) -> Self {
        Self::Owned {
            codes: codes.into(),
            scales: scales.into(),
        }
    }

    /// Calls `f` with the whole tensor's codes and scales.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        match self {
            Self::Owned { codes, scales } => f(codes, scales),
            // A name that is no longer quantized cannot happen for an opened checkpoint; empty
            // slices then fail the size check of the view instead of panicking.
            // Checked (scales included) when the model loaded it through `Checkpoint::get`.
            Self::Mapped { ckpt, name } => match ckpt.quantized_parts(name) {
                Ok(v) => f(v.codes, v.scales),
                Err(_) => f(&[], &[]),
            },
        }
    }
}

/// 16-bit float weights kept at their stored width (`u16` bits, row-major): bf16, or f16 where
/// the holder says so ([`TensorData::F16`](crate::TensorData::F16), [`DenseMatrix::f16`]).
#[derive(Debug, Clone)]
pub enum Bf16Data {
    /// In memory.
    Owned(Arc<[u16]>),
    /// Tensor `name` of a memory-mapped checkpoint (checked 2-byte aligned when loaded),
    /// borrowed afresh for each product: no copy at all.
    Mapped {
        /// The checkpoint.
        ckpt: Arc<tquant_convert::Checkpoint>,
        /// The tensor's name in it.
        name: Arc<str>,
    },
}

impl Bf16Data {
    /// Calls `f` with the whole tensor's bits (empty if a mapped tensor vanished, which then
    /// fails the kernels' length check instead of panicking).
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&[u16]) -> R) -> R {
        match self {
            Self::Owned(bits) => f(bits),
            Self::Mapped { ckpt, name } => {
                let bytes = ckpt.raw(name).map(|t| t.bytes).unwrap_or(&[]);
                f(kernels::bf16_bits(bytes).unwrap_or(&[]))
            }
        }
    }

    /// The values widened to f32 (norm vectors and quantize-on-load only).
    pub fn to_f32(&self) -> Vec<f32> {
        self.with(|b| b.iter().map(|&v| kernels::bf16::bf16_to_f32(v)).collect())
    }

    /// The bits read as IEEE f16, widened to f32 (norm vectors and quantize-on-load only).
    pub fn f16_to_f32(&self) -> Vec<f32> {
        self.with(|b| b.iter().map(|&v| kernels::f16::f16_to_f32(v)).collect())
    }
}

/// Storage of a float matrix.
#[derive(Debug, Clone)]
enum DenseData {
    F32(Arc<[f32]>),
    Bf16(Bf16Data),
    F16(Bf16Data),
}

/// A float matrix (f32, or bf16 or f16 at its stored width), possibly a row range of a larger shared
/// buffer (one expert of a fused tensor).
#[derive(Debug, Clone)]
pub struct DenseMatrix {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    data: DenseData,
    offset: usize,
}

impl DenseMatrix {
    /// A matrix over `rows * cols` f32 values, row-major.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        Self {
            rows,
            cols,
            data: DenseData::F32(data.into()),
            offset: 0,
        }
    }

    /// A bf16 matrix, multiplied through the bf16 kernels without widening.
    pub fn bf16(rows: usize, cols: usize, data: Bf16Data) -> Self {
        Self {
            rows,
            cols,
            data: DenseData::Bf16(data),
            offset: 0,
        }
    }

    /// An f16 matrix, multiplied through the f16 kernels without widening.
    pub fn f16(rows: usize, cols: usize, data: Bf16Data) -> Self {
        Self {
            rows,
            cols,
            data: DenseData::F16(data),
            offset: 0,
        }
    }

    /// The row-major values when stored as f32 (`None` for bf16 and f16).
    pub fn f32_values(&self) -> Option<&[f32]> {
        match &self.data {
            DenseData::F32(v) => Some(&v[self.offset..self.offset + self.rows * self.cols]),
            DenseData::Bf16(_) | DenseData::F16(_) => None,
        }
    }

    /// Whether the values are stored as f16.
    pub fn is_f16(&self) -> bool {
        matches!(self.data, DenseData::F16(_))
    }

    /// A new `[rows, cols]` matrix of `values` stored at this matrix's width (f32, bf16 or
    /// f16; rounded to nearest even where narrower).
    pub fn like(&self, rows: usize, cols: usize, values: Vec<f32>) -> Self {
        match self.data {
            DenseData::F32(_) => Self::new(rows, cols, values),
            DenseData::Bf16(_) => {
                let bits = values.iter().map(|&v| kernels::bf16::f32_to_bf16(v));
                Self::bf16(rows, cols, Bf16Data::Owned(bits.collect()))
            }
            DenseData::F16(_) => {
                let bits = values.iter().map(|&v| kernels::f16::f32_to_f16(v));
                Self::f16(rows, cols, Bf16Data::Owned(bits.collect()))
            }
        }
    }

    /// Bytes per stored value.
    fn width(&self) -> usize {
        match self.data {
            DenseData::F32(_) => 4,
            DenseData::Bf16(_) | DenseData::F16(_) => 2,
        }
    }

    fn forward(&self, x: &[f32], n: usize, y: &mut [f32], mode: Mode) -> Result<(), ModelError> {
        let (o, len) = (self.offset, self.rows * self.cols);
        match &self.data {
            DenseData::F32(v) => Ok(kernels::matmul_f32(
                &v[o..o + len],
                self.rows,
                self.cols,
                x,
                n,
                y,
            )?),
            DenseData::Bf16(b) => b.with(|bits| {
                let w = bits.get(o..o + len).unwrap_or(&[]);
                Ok(kernels::matmul_bf16(
                    w, self.rows, self.cols, x, n, y, mode,
                )?)
            }),
            DenseData::F16(b) => b.with(|bits| {
                let w = bits.get(o..o + len).unwrap_or(&[]);
                Ok(kernels::matmul_f16(w, self.rows, self.cols, x, n, y, mode)?)
            }),
        }
    }

    fn row(&self, r: usize, out: &mut [f32]) {
        let start = self.offset + r * self.cols;
        match &self.data {
            DenseData::F32(v) => out.copy_from_slice(&v[start..start + self.cols]),
            DenseData::Bf16(b) => b.with(|bits| {
                for (o, &v) in out.iter_mut().zip(&bits[start..start + self.cols]) {
                    *o = kernels::bf16::bf16_to_f32(v);
                }
            }),
            DenseData::F16(b) => b.with(|bits| {
                for (o, &v) in out.iter_mut().zip(&bits[start..start + self.cols]) {
                    *o = kernels::f16::f16_to_f32(v);
                }
            }),
        }
    }
}

/// A block-quantized matrix: `rows` rows starting at `row0` of a packed tensor of `cols` columns.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    /// Elements per block along a row.
    pub block: usize,
    /// How the scales are stored.
    pub scale_dtype: ScaleDtype,
    packed: Packed,
    row0: usize,
    tables: QuantTables,
}

/// The values a [`QuantMatrix`]'s codes stand for.
#[derive(Debug, Clone)]
pub enum QuantTables {
    /// One codebook for every row, its values in code order.
    Shared(Arc<[f32]>),
    /// `learned_row`: a table per row of the whole packed tensor (row `row0 + r` is the
    /// matrix's row `r`).
    PerRow(Arc<kernels::RowTables>),
}

impl From<Arc<[f32]>> for QuantTables {
    fn from(table: Arc<[f32]>) -> Self {
        Self::Shared(table)
    }
}

impl From<Arc<kernels::RowTables>> for QuantTables {
    fn from(tables: Arc<kernels::RowTables>) -> Self {
        Self::PerRow(tables)
    }
}

impl QuantMatrix {
    /// Checks the byte lengths (and that per-row tables cover the rows) once; later views are
    /// built per call without copying. `tables`: one codebook (`Arc<[f32]>`) or a table per row
    /// (`Arc<RowTables>`).
    pub fn new(
        rows: usize,
        cols: usize,
        block: usize,
        scale_dtype: ScaleDtype,
        packed: Packed,
        row0: usize,
        tables: impl Into<QuantTables>,
    ) -> Result<Self, ModelError> {
        let m = Self {
            rows,
            cols,
            block,
            scale_dtype,
            packed,
            row0,
            tables: tables.into(),
        };
        m.view(|q| q.map(|_| ()))?;
        Ok(m)
    }

    fn scale_bytes_per_row(&self) -> usize {
        self.cols.div_ceil(self.block) * self.scale_dtype.size()
    }

    /// Builds the kernels' view of this matrix and calls `f` with it.
    fn view<R>(&self, f: impl FnOnce(Result<QMatrix<'_>, ModelError>) -> R) -> R {
        let (rb, sb) = (row_bytes(self.cols), self.scale_bytes_per_row());
        self.packed.with(|codes, scales| {
            let c = codes.get(self.row0 * rb..(self.row0 + self.rows) * rb);
            let s = scales.get(self.row0 * sb..(self.row0 + self.rows) * sb);
            let q = match (c, s, &self.tables) {
                (Some(c), Some(s), QuantTables::Shared(table)) => QMatrix::new(
                    self.rows,
                    self.cols,
                    self.block,
                    c,
                    s,
                    self.scale_dtype,
                    table,
                )
                .map_err(ModelError::from),
                (Some(c), Some(s), QuantTables::PerRow(t)) => match t.slice(self.row0, self.rows) {
                    Some(t) => QMatrix::with_row_tables(
                        self.rows,
                        self.cols,
                        self.block,
                        c,
                        s,
                        self.scale_dtype,
                        t,
                    )
                    .map_err(ModelError::from),
                    None => Err(ModelError::from(kernels::KernelError::Length {
                        what: "row tables [rows, 16]",
                        got: t.rows() * 16,
                        want: (self.row0 + self.rows) * 16,
                    })),
                },
                _ => Err(ModelError::PartsTooShort {
                    row0: self.row0,
                    rows: self.rows,
                    cols: self.cols,
                    code_bytes: (self.row0 + self.rows) * rb,
                    scale_bytes: (self.row0 + self.rows) * sb,
                    codes: codes.len(),
                    scales: scales.len(),
                }),
            };
            f(q)
        })
    }

    /// Dequantizes row `r` into `out` (`cols` values): for embedding lookups and the absorbed
    /// attention's transposed key projection, never for products.
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let (rb, sb) = (row_bytes(self.cols), self.scale_bytes_per_row());
        let row = self.row0 + r;
        self.packed.with(|codes, scales| {
            let packed = &codes[row * rb..(row + 1) * rb];
            let sc = &scales[row * sb..(row + 1) * sb];
            let table: &[f32] = match &self.tables {
                QuantTables::PerRow(t) => &t
                    .slice(row, 1)
                    .expect("rows checked when built")
                    .row_table(0)[..],
                QuantTables::Shared(table) => table,
            };
            for (c, o) in out.iter_mut().enumerate().take(self.cols) {
                let s = self.scale_dtype.read(sc, c / self.block);
                *o = table[code_at(packed, c) as usize] * s;
            }
        })
    }

    /// Bytes of codes and scales this matrix reads per product.
    pub fn bytes(&self) -> usize {
        self.rows * (row_bytes(self.cols) + self.scale_bytes_per_row())
    }
}

/// Where q8_0 codes and scales live.
#[derive(Debug, Clone)]
pub enum Q8Data {
    /// In memory (a model quantized as it loads, or generated): int8 codes `[rows, cols]`,
    /// f16 scale bits `[rows, blocks]`.
    Owned {
        /// Codes.
        codes: Arc<[i8]>,
        /// Scale bits.
        scales: Arc<[u16]>,
    },
    /// q8_0 tensor `name` of a memory-mapped checkpoint (its scales checked 2-byte aligned
    /// when loaded), borrowed afresh for each product: no copy.
    Mapped {
        /// The checkpoint.
        ckpt: Arc<tquant_convert::Checkpoint>,
        /// The tensor's name in it.
        name: Arc<str>,
    },
}

impl Q8Data {
    /// Codes and scales held in memory.
    pub fn owned(m: tquant_formats::q8_0::Q8Matrix) -> Self {
        Self::Owned {
            codes: m.codes.into(),
            scales: m.scales.into(),
        }
    }

    /// Calls `f` with the whole tensor's codes and scale bits.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&[i8], &[u16]) -> R) -> R {
        match self {
            Self::Owned { codes, scales } => f(codes, scales),
            // A vanished tensor gives empty slices, which fail the view's length check.
            Self::Mapped { ckpt, name } => match ckpt.quantized_parts(name) {
                Ok(v) => f(
                    kernels::int8::i8_codes(v.codes),
                    kernels::bf16_bits(v.scales).unwrap_or(&[]),
                ),
                Err(_) => f(&[], &[]),
            },
        }
    }
}

/// A q8_0 matrix (ggml's Q8_0: int8 codes, an f16 scale per 32 along a row): `rows` rows from
/// `row0` of a tensor of `cols` columns.
#[derive(Debug, Clone)]
pub struct Q8Linear {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    data: Q8Data,
    row0: usize,
}

impl Q8Linear {
    /// Checks the lengths once; later views are built per call without copying.
    pub fn new(rows: usize, cols: usize, data: Q8Data, row0: usize) -> Result<Self, ModelError> {
        let m = Self {
            rows,
            cols,
            data,
            row0,
        };
        m.view(|q| q.map(|_| ()))?;
        Ok(m)
    }

    fn view<R>(&self, f: impl FnOnce(Result<kernels::Q8Matrix<'_>, ModelError>) -> R) -> R {
        let bpr = self.cols.div_ceil(kernels::int8::Q8_BLOCK);
        self.data.with(|codes, scales| {
            let c = codes.get(self.row0 * self.cols..(self.row0 + self.rows) * self.cols);
            let s = scales.get(self.row0 * bpr..(self.row0 + self.rows) * bpr);
            let q = match (c, s) {
                (Some(c), Some(s)) => {
                    kernels::Q8Matrix::new(self.rows, self.cols, c, s).map_err(ModelError::from)
                }
                _ => Err(ModelError::PartsTooShort {
                    row0: self.row0,
                    rows: self.rows,
                    cols: self.cols,
                    code_bytes: (self.row0 + self.rows) * self.cols,
                    scale_bytes: (self.row0 + self.rows) * bpr * 2,
                    codes: codes.len(),
                    scales: scales.len() * 2,
                }),
            };
            f(q)
        })
    }

    /// Bytes of codes and scales one product reads.
    pub fn bytes(&self) -> usize {
        self.rows * (self.cols + 2 * self.cols.div_ceil(kernels::int8::Q8_BLOCK))
    }
}

/// A weight matrix `[rows, cols]` (PyTorch `[out, in]`), applied as `y = x W^T`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Float weights.
    Dense(DenseMatrix),
    /// Block-quantized weights, multiplied from their codes.
    Quant(QuantMatrix),
    /// q8_0 weights, multiplied from their int8 codes.
    Q8(Q8Linear),
}

impl Linear {
    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        match self {
            Self::Dense(d) => d.rows,
            Self::Quant(q) => q.rows,
            Self::Q8(q) => q.rows,
        }
    }

    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        match self {
            Self::Dense(d) => d.cols,
            Self::Quant(q) => q.cols,
            Self::Q8(q) => q.cols,
        }
    }

    /// Whether the matrix is block-quantized.
    pub fn is_quantized(&self) -> bool {
        matches!(self, Self::Quant(_) | Self::Q8(_))
    }

    /// Rows `r0..r0 + rows` as their own matrix (shares the storage).
    pub fn row_range(&self, r0: usize, rows: usize) -> Self {
        assert!(r0 + rows <= self.rows(), "row range outside the matrix");
        match self {
            Self::Dense(d) => Self::Dense(DenseMatrix {
                rows,
                cols: d.cols,
                data: d.data.clone(),
                offset: d.offset + r0 * d.cols,
            }),
            Self::Quant(q) => Self::Quant(QuantMatrix {
                rows,
                row0: q.row0 + r0,
                ..q.clone()
            }),
            Self::Q8(q) => Self::Q8(Q8Linear {
                rows,
                row0: q.row0 + r0,
                ..q.clone()
            }),
        }
    }

    /// `y[n, rows] = x[n, cols] W^T`.
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        mode: Mode,
    ) -> Result<(), ModelError> {
        debug_assert_eq!(x.len(), n * self.cols());
        debug_assert_eq!(y.len(), n * self.rows());
        match self {
            Self::Dense(d) => d.forward(x, n, y, mode),
            Self::Quant(q) => q.view(|m| Ok(kernels::matmul(&m?, x, n, y, mode)?)),
            Self::Q8(q) => q.view(|m| Ok(kernels::matmul_q8_0(&m?, x, n, y, mode)?)),
        }
    }

    /// Allocating variant of [`Linear::forward`].
    pub fn apply(&self, x: &[f32], n: usize, mode: Mode) -> Result<Vec<f32>, ModelError> {
        let mut y = vec![0.0; n * self.rows()];
        self.forward(x, n, &mut y, mode)?;
        Ok(y)
    }

    /// Row `r` as floats (dequantized if packed).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        match self {
            Self::Dense(d) => d.row(r, out),
            Self::Quant(q) => q.decode_row(r, out),
            // Only the gathered row is dequantized (embedding lookups).
            Self::Q8(q) => q.view(|m| {
                if let Ok(m) = m {
                    m.decode_row(r, out)
                }
            }),
        }
    }

    /// Bytes of weights one product reads.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Dense(d) => d.rows * d.cols * d.width(),
            Self::Quant(q) => q.bytes(),
            Self::Q8(q) => q.bytes(),
        }
    }
}

#[cfg(test)]
mod q8_tests {
    use super::*;
    use tquant_formats::q8_0::Q8Matrix;

    /// A q8_0 layer multiplies like the f32 layer of its dequantized weights, a row range is
    /// the same rows, and a row lookup dequantizes that row alone.
    #[test]
    fn q8_0_layers_match_their_dequantized_weights() {
        let (rows, cols, n) = (12, 70, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.61).sin()).collect();
        let q = Q8Matrix::quantize(&w, rows, cols).unwrap();
        let deq = q.dequantize();
        let lin = Linear::Q8(Q8Linear::new(rows, cols, Q8Data::owned(q), 0).unwrap());
        let dense = Linear::Dense(DenseMatrix::new(rows, cols, deq.clone()));
        let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).cos()).collect();
        let a = lin.apply(&x, n, Mode::Exact).unwrap();
        let b = dense.apply(&x, n, Mode::Exact).unwrap();
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + v.abs()), "{u} {v}");
        }
        let part = lin.row_range(4, 5);
        assert_eq!(part.bytes(), 5 * (cols + 2 * 3));
        let mut row = vec![0.0; cols];
        part.row(2, &mut row);
        assert_eq!(row, deq[6 * cols..7 * cols]);
        assert!(lin.is_quantized());
        // A view whose codes do not fill the shape is refused when built.
        let short = Q8Data::Owned {
            codes: vec![0i8; 10].into(),
            scales: vec![0u16; 3].into(),
        };
        assert!(Q8Linear::new(rows, cols, short, 0).is_err());
    }
}
