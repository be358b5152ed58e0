//! The borrowed view of a quantized matrix, validated once.

use crate::{KernelError, ScaleDtype};
use tquant_formats::pack::row_bytes;
use tquant_formats::QuantizedMatrix;

/// A quantized weight matrix `[rows, cols]` (out x in) in tquant's layout, borrowed.
///
/// - `codes`: each row in `ceil(cols / 2)` bytes, element `2j` in the low nibble of byte `j`.
/// - `scales`: row-major `[rows, ceil(cols / block)]`, `scale_dtype` little-endian bytes; the last
///   block of a row is short when `cols % block != 0`.
/// - `table`: the codebook in code order, 1 to 16 values; codes past its end decode to 0.
///
/// Element `(r, c)` is `table[code(r, c)] * scale(r, c / block)`.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    rows: usize,
    cols: usize,
    block: usize,
    codes: &'a [u8],
    scales: &'a [u8],
    scale_dtype: ScaleDtype,
    table: [f32; 16],
    table_len: usize,
    table_i8: [i8; 16],
    table_step: f32,
    row_tables: Option<RowTablesRef<'a>>,
}

/// A table per row (`learned_row`), owned: each row's 16 values (codes past a shorter table
/// decode to 0) and their int8 images for the fast mode, made once (a product only reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct RowTables {
    values: Vec<[f32; 16]>,
    int8: Vec<[i8; 16]>,
    steps: Vec<f32>,
}

/// The tables of a run of rows of a [`RowTables`], for [`QMatrix::with_row_tables`].
#[derive(Debug, Clone, Copy)]
pub struct RowTablesRef<'a> {
    values: &'a [[f32; 16]],
    int8: &'a [[i8; 16]],
    steps: &'a [f32],
}

impl RowTables {
    /// The tables of `values.len() / per_row` rows, `per_row` (1 to 16) values each in code
    /// order; every value finite.
    pub fn new(values: &[f32], per_row: usize) -> Result<Self, KernelError> {
        if per_row == 0 || per_row > 16 {
            return Err(KernelError::TableSize(per_row));
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KernelError::TableValue {
                index: index % per_row,
                value,
            });
        }
        if !values.len().is_multiple_of(per_row) {
            return Err(KernelError::Length {
                what: "row tables [rows, per_row]",
                got: values.len(),
                want: values.len().div_ceil(per_row) * per_row,
            });
        }
        let values: Vec<[f32; 16]> = values
            .chunks_exact(per_row)
            .map(|t| {
                let mut padded = [0.0f32; 16];
                padded[..per_row].copy_from_slice(t);
                padded
            })
            .collect();
        // Each row's image is made here, not remembered per thread as a shared table's is:
        // rows rarely share a table.
        let (int8, steps) = values.iter().map(int8_image).unzip();
        Ok(Self {
            values,
            int8,
            steps,
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.values.len()
    }

    /// Every row's table.
    pub fn view(&self) -> RowTablesRef<'_> {
        self.slice(0, self.rows()).expect("the whole range")
    }

    /// The tables of rows `row0..row0 + rows` (an expert's rows of a fused tensor), or `None`
    /// past the end.
    pub fn slice(&self, row0: usize, rows: usize) -> Option<RowTablesRef<'_>> {
        let end = row0.checked_add(rows)?;
        Some(RowTablesRef {
            values: self.values.get(row0..end)?,
            int8: &self.int8[row0..end],
            steps: &self.steps[row0..end],
        })
    }
}

impl<'a> RowTablesRef<'a> {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.values.len()
    }

    /// Row `r`'s table, padded to 16 entries with zeros.
    pub fn row_table(&self, r: usize) -> &'a [f32; 16] {
        &self.values[r]
    }
}

/// The parts of a quantized matrix by name, for [`QMatrix::from_parts`] (the same layout as
/// [`QMatrix`]; `tquant_convert::QuantizedView::matrix` returns one for each stored matrix).
#[derive(Debug, Clone, Copy)]
pub struct QMatrixParts<'a> {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    /// Elements per block along a row (`cols` for one block per row).
    pub block: usize,
    /// Packed codes, `tquant_formats::pack` order.
    pub codes: &'a [u8],
    /// Scales, row-major `[rows, blocks_per_row]`.
    pub scales: &'a [u8],
    /// How the scales are stored.
    pub scale_dtype: ScaleDtype,
    /// The codebook, 1 to 16 values in code order.
    pub table: &'a [f32],
}

impl<'a> QMatrix<'a> {
    /// The view of `parts`: checks every length against the shape (overflow-safe) and the
    /// table; copies nothing but the table.
    pub fn from_parts(parts: QMatrixParts<'a>) -> Result<Self, KernelError> {
        let QMatrixParts {
            rows,
            cols,
            block,
            codes,
            scales,
            scale_dtype,
            table,
        } = parts;
        Self::new(rows, cols, block, codes, scales, scale_dtype, table)
    }

    /// The view of a matrix [`tquant_formats::BlockQuantizer::quantize`] made, with `table`, the
    /// codebook it was quantized with in code order (`Codebook::values`).
    ///
    /// ```
    /// use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
    /// use tquant_kernels::{matmul, Mode, QMatrix};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (rows, cols) = (2, 64);
    /// let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.1).cos()).collect();
    /// let nf4: Format = "nf4".parse()?;
    /// let quantizer = BlockQuantizer {
    ///     block: BlockSize::Elements(32),
    ///     scale_dtype: ScaleDtype::F16,
    /// };
    /// let q = quantizer.quantize(nf4.codebook(), &w, rows, cols)?;
    /// let view = QMatrix::from_quantized(&q, nf4.codebook().values())?;
    /// assert_eq!((view.rows(), view.cols(), view.block()), (rows, cols, 32));
    /// let mut y = vec![0.0f32; rows];
    /// matmul(&view, &vec![1.0; cols], 1, &mut y, Mode::Exact)?;
    /// // A table of the wrong length is refused like any other bad part.
    /// assert!(QMatrix::from_quantized(&q, &[]).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_quantized(m: &'a QuantizedMatrix, table: &[f32]) -> Result<Self, KernelError> {
        let (codes, scales) = (m.codes.as_slice(), m.scales.as_slice());
        Self::new(m.rows, m.cols, m.block, codes, scales, m.scale_dtype, table)
    }

    /// [`QMatrix::from_quantized`] with a table per row ([`QMatrix::with_row_tables`]).
    pub fn from_quantized_with_row_tables(
        m: &'a QuantizedMatrix,
        tables: RowTablesRef<'a>,
    ) -> Result<Self, KernelError> {
        let (codes, scales) = (m.codes.as_slice(), m.scales.as_slice());
        Self::with_row_tables(
            m.rows,
            m.cols,
            m.block,
            codes,
            scales,
            m.scale_dtype,
            tables,
        )
    }

    /// [`QMatrix::from_parts`] with the parts in order: `rows, cols, block, codes, scales,
    /// scale_dtype, table`.
    pub fn new(
        rows: usize,
        cols: usize,
        block: usize,
        codes: &'a [u8],
        scales: &'a [u8],
        scale_dtype: ScaleDtype,
        table: &[f32],
    ) -> Result<Self, KernelError> {
        if block == 0 {
            return Err(KernelError::ZeroBlock);
        }
        if table.is_empty() || table.len() > 16 {
            return Err(KernelError::TableSize(table.len()));
        }
        if let Some((index, &value)) = table.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KernelError::TableValue { index, value });
        }
        let overflow = KernelError::Overflow { rows, cols };
        let want_codes = rows.checked_mul(row_bytes(cols)).ok_or(overflow.clone())?;
        if codes.len() != want_codes {
            return Err(KernelError::CodesLength {
                rows,
                cols,
                got: codes.len(),
                want: want_codes,
            });
        }
        let blocks = cols.div_ceil(block);
        let want_scales = rows
            .checked_mul(blocks)
            .and_then(|v| v.checked_mul(scale_dtype.size()))
            .ok_or(overflow.clone())?;
        // Every element index must fit an i32-free usize product later on.
        rows.checked_mul(cols).ok_or(overflow)?;
        if scales.len() != want_scales {
            return Err(KernelError::ScalesLength {
                rows,
                blocks,
                dtype: scale_dtype,
                got: scales.len(),
                want: want_scales,
            });
        }
        let mut padded = [0.0f32; 16];
        padded[..table.len()].copy_from_slice(table);
        let (table_i8, table_step) = int8_table(&padded);
        Ok(Self {
            rows,
            cols,
            block,
            codes,
            scales,
            scale_dtype,
            table: padded,
            table_len: table.len(),
            table_i8,
            table_step,
            row_tables: None,
        })
    }

    /// A view whose row `r` decodes with `tables`' row `r` (a table per row, `learned_row`):
    /// the same checks as [`QMatrix::new`], and `tables` must have `rows` rows. [`QMatrix::table`]
    /// is all zeros for such a view; every path reads [`QMatrix::row_table`].
    #[allow(clippy::too_many_arguments)]
    pub fn with_row_tables(
        rows: usize,
        cols: usize,
        block: usize,
        codes: &'a [u8],
        scales: &'a [u8],
        scale_dtype: ScaleDtype,
        tables: RowTablesRef<'a>,
    ) -> Result<Self, KernelError> {
        if tables.rows() != rows {
            return Err(KernelError::Length {
                what: "row tables [rows, 16]",
                got: tables.rows().saturating_mul(16),
                want: rows.saturating_mul(16),
            });
        }
        let mut q = Self::new(rows, cols, block, codes, scales, scale_dtype, &[0.0; 16])?;
        q.row_tables = Some(tables);
        Ok(q)
    }

    /// Whether each row has its own table ([`QMatrix::with_row_tables`]).
    pub fn has_row_tables(&self) -> bool {
        self.row_tables.is_some()
    }

    /// Row `r`'s table (the matrix's own without row tables), padded to 16 entries.
    #[inline]
    pub fn row_table(&self, r: usize) -> &[f32; 16] {
        match &self.row_tables {
            Some(t) => &t.values[r],
            None => &self.table,
        }
    }

    /// Row `r`'s int8 table (see [`QMatrix::table_i8`]).
    #[inline]
    pub fn row_table_i8(&self, r: usize) -> &[i8; 16] {
        match &self.row_tables {
            Some(t) => &t.int8[r],
            None => &self.table_i8,
        }
    }

    /// The step of row `r`'s int8 table (see [`QMatrix::table_step`]).
    #[inline]
    pub fn row_table_step(&self, r: usize) -> f32 {
        match &self.row_tables {
            Some(t) => t.steps[r],
            None => self.table_step,
        }
    }

    /// Whether row `r`'s int8 table equals its f32 table (see [`QMatrix::table_i8_is_exact`]).
    pub fn row_table_i8_is_exact(&self, r: usize) -> bool {
        let (t, q, step) = (
            self.row_table(r),
            self.row_table_i8(r),
            self.row_table_step(r),
        );
        t.iter()
            .zip(q)
            .all(|(&v, &m)| (v - m as f32 * step).abs() <= v.abs() * 1e-6)
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Block length in elements.
    pub fn block(&self) -> usize {
        self.block
    }
    /// Blocks (scales) per row.
    pub fn blocks_per_row(&self) -> usize {
        self.cols.div_ceil(self.block)
    }
    /// The packed codes.
    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }
    /// The scale bytes.
    pub fn scales(&self) -> &'a [u8] {
        self.scales
    }
    /// How the scales are stored.
    pub fn scale_dtype(&self) -> ScaleDtype {
        self.scale_dtype
    }
    /// The table padded to 16 entries with zeros.
    pub fn table(&self) -> &[f32; 16] {
        &self.table
    }
    /// How many table entries the caller gave.
    pub fn table_len(&self) -> usize {
        self.table_len
    }
    /// The fast mode's int8 table: `table[c] ~= table_i8[c] * table_step`.
    pub fn table_i8(&self) -> &[i8; 16] {
        &self.table_i8
    }
    /// The step of [`QMatrix::table_i8`]: `table[c] ~= table_i8[c] * table_step`.
    pub fn table_step(&self) -> f32 {
        self.table_step
    }
    /// Whether the int8 table equals the f32 table exactly (up to f32 rounding of the step).
    pub fn table_i8_is_exact(&self) -> bool {
        self.table
            .iter()
            .zip(&self.table_i8)
            .all(|(&v, &q)| (v - q as f32 * self.table_step).abs() <= v.abs() * 1e-6)
    }

    /// Packed codes of row `r`.
    #[inline]
    pub(crate) fn row_codes(&self, r: usize) -> &'a [u8] {
        let rb = row_bytes(self.cols);
        &self.codes[r * rb..(r + 1) * rb]
    }

    /// Packed codes of rows `r..r + count`, which lie one after another.
    #[inline]
    pub(crate) fn rows_codes(&self, r: usize, count: usize) -> &'a [u8] {
        let rb = row_bytes(self.cols);
        &self.codes[r * rb..(r + count) * rb]
    }

    /// Scale bytes of rows `r..r + count`.
    #[inline]
    pub(crate) fn rows_scales(&self, r: usize, count: usize) -> &'a [u8] {
        let n = self.blocks_per_row() * self.scale_dtype.size();
        &self.scales[r * n..(r + count) * n]
    }

    /// Scale bytes of row `r`.
    #[inline]
    pub(crate) fn row_scales(&self, r: usize) -> &'a [u8] {
        let n = self.blocks_per_row() * self.scale_dtype.size();
        &self.scales[r * n..(r + 1) * n]
    }

    /// Scale of block `b` of row `r`.
    #[inline]
    pub fn scale(&self, r: usize, b: usize) -> f32 {
        self.scale_dtype
            .read(self.scales, r * self.blocks_per_row() + b)
    }

    /// Whether the SIMD paths can run this shape: the 32-element pieces of every block line up
    /// with vector lanes (block 16, a multiple of 32, or one block per row).
    pub(crate) fn simd_regular(&self) -> bool {
        self.block == 16 || self.block.is_multiple_of(32) || self.blocks_per_row() == 1
    }
}

/// The int8 image of a table: exact when every value is an integer multiple (up to 127) of one
/// step, else the step of least squared error over the table (see [`least_error_image`]).
/// Remembered per thread (up to 2^16 tables, then forgotten at once): a view is built per
/// product, and a model's matrices share a handful of tables (one per matrix for `learned`).
fn int8_table(t: &[f32; 16]) -> ([i8; 16], f32) {
    type Images = std::collections::HashMap<[u32; 16], ([i8; 16], f32)>;
    thread_local! {
        static SEEN: std::cell::RefCell<Images> = std::cell::RefCell::new(Images::new());
    }
    let key = t.map(f32::to_bits);
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if let Some(&image) = seen.get(&key) {
            return image;
        }
        if seen.len() >= 1 << 16 {
            seen.clear();
        }
        let image = int8_image(t);
        seen.insert(key, image);
        image
    })
}

fn int8_image(t: &[f32; 16]) -> ([i8; 16], f32) {
    let max_abs = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max_abs == 0.0 {
        return ([0; 16], 1.0);
    }
    let min_nz = t
        .iter()
        .filter(|v| **v != 0.0)
        .fold(f32::INFINITY, |m, v| m.min(v.abs()));
    for k in 1..=16u32 {
        let step = min_nz / k as f32;
        if max_abs / step > 127.5 {
            break;
        }
        let fits = t.iter().all(|&v| {
            let m = v / step;
            (m - m.round()).abs() <= 1e-4 * m.abs().max(1.0)
        });
        if fits {
            return (t.map(|v| (v / step).round() as i8), step);
        }
    }
    least_error_image(t, max_abs)
}

/// The integers and step `(q, step)` with `|q| <= 127` of least `sum (t - q step)^2` among: the
/// step `max|t| / 127`, and for each integer `m` in 64..=127 the least-squares step of the
/// integers that rounding to `max|t| / m` gives. Rounding a table to `max|t| / 127` alone leaves
/// errors up to half a step that fall the same way on every weight with that code; a 3-bit
/// table (sf3) lost 0.005 bits per byte on tiny-lite to them (docs/fast-mode.md).
fn least_error_image(t: &[f32; 16], max_abs: f32) -> ([i8; 16], f32) {
    let image = |step: f32| -> Option<([i8; 16], f64)> {
        let q = t.map(|v| (v / step).round());
        if q.iter().any(|m| m.abs() > 127.0) {
            return None;
        }
        let err = t
            .iter()
            .zip(&q)
            .map(|(&v, &m)| (v as f64 - m as f64 * step as f64).powi(2))
            .sum();
        Some((q.map(|m| m as i8), err))
    };
    let step127 = max_abs / 127.0;
    let (q127, err127) = image(step127).expect("max|t| / 127 keeps every value within 127");
    let mut best = (q127, step127, err127);
    for m in (64..=127).rev() {
        let q = t.map(|v| (v / (max_abs / m as f32)).round() as f64);
        let qq: f64 = q.iter().map(|m| m * m).sum();
        let step = (t.iter().zip(&q).map(|(&v, m)| v as f64 * m).sum::<f64>() / qq) as f32;
        if let Some((q, err)) = image(step).filter(|_| step > 0.0) {
            if err < best.2 {
                best = (q, step, err);
            }
        }
    }
    (best.0, best.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tquant_formats::Format;

    #[test]
    fn integer_like_tables_are_exact_in_int8() {
        for name in [
            "int4",
            "int4_full",
            "e2m1",
            "e2m1_sr",
            "e2m1_sp",
            "e3m0",
            "apot4",
            "apot4_sp",
            "int3",
            "e2m0",
        ] {
            let f: Format = name.parse().unwrap();
            let (q, step) = int8_table(&pad(f.codebook().values()));
            for (v, q) in f.codebook().values().iter().zip(q) {
                assert!((v - q as f32 * step).abs() <= v.abs() * 1e-6, "{name}: {v}");
            }
        }
    }

    /// Other tables take the step of least squared error: never worse than `max|t| / 127`, no
    /// worse than a fine search over steps, every value within half a step, `|q| <= 127`.
    #[test]
    fn other_tables_take_the_step_of_least_error() {
        let err = |t: &[f32; 16], q: &[i8; 16], step: f32| -> f64 {
            t.iter()
                .zip(q)
                .map(|(&v, &m)| (v as f64 - m as f64 * step as f64).powi(2))
                .sum()
        };
        for name in ["nf4", "sf4", "nf3", "sf3", "sf4_opt"] {
            let f: Format = name.parse().unwrap();
            let t = pad(f.codebook().values());
            let (q, step) = int8_table(&t);
            assert_eq!(
                int8_table(&t),
                (q, step),
                "{name}: the same twice (remembered)"
            );
            let max_abs = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let base = max_abs / 127.0;
            let q127 = t.map(|v| (v / base).round() as i8);
            let e = err(&t, &q, step);
            assert!(e <= err(&t, &q127, base), "{name}");
            // A search over 20,000 steps from max/127 to max/64 does no better.
            let fine = (0..=20_000)
                .map(|i| max_abs / (127.0 - 63.0 * i as f32 / 20_000.0))
                .map(|s| err(&t, &t.map(|v| (v / s).round() as i8), s))
                .fold(f64::INFINITY, f64::min);
            assert!(e <= fine * (1.0 + 1e-6) + 1e-12, "{name}: {e} vs {fine}");
            for (v, q) in t.iter().zip(q) {
                assert!((q as i32).abs() <= 127);
                assert!((v - q as f32 * step).abs() <= 0.5 * step * (1.0 + 1e-5) + 1e-7);
            }
        }
        // sf3: the step of least error is not max/127 (its values' rounding errors were).
        let f: Format = "sf3".parse().unwrap();
        let (q, step) = int8_table(&pad(f.codebook().values()));
        assert!(q[7] < 127 && step > 1.0 / 127.0, "{q:?} {step}");
    }

    fn pad(v: &[f32]) -> [f32; 16] {
        let mut t = [0.0; 16];
        t[..v.len()].copy_from_slice(v);
        t
    }

    #[test]
    fn from_parts_names_every_field() {
        let t = [-1.0f32, 0.5];
        // Row 0 codes 1, 0, 1; row 1 codes 0, 0, 1 (low nibble first); block 2, f32 scales.
        let codes = [0x01u8, 0x01, 0x00, 0x01];
        let scales: Vec<u8> = [2.0f32, 4.0, 1.0, 8.0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let parts = QMatrixParts {
            rows: 2,
            cols: 3,
            block: 2,
            codes: &codes,
            scales: &scales,
            scale_dtype: ScaleDtype::F32,
            table: &t,
        };
        let q = QMatrix::from_parts(parts).unwrap();
        assert_eq!((q.rows(), q.cols(), q.block(), q.table_len()), (2, 3, 2, 2));
        let got: Vec<f32> = (0..2)
            .flat_map(|r| (0..3).map(move |c| (r, c)))
            .map(|(r, c)| {
                let code = tquant_formats::pack::code_at(q.row_codes(r), c);
                q.table()[code as usize] * q.scale(r, c / 2)
            })
            .collect();
        assert_eq!(got, [1.0, -2.0, 2.0, -1.0, -1.0, 4.0]);
        assert!(matches!(
            QMatrix::from_parts(QMatrixParts { block: 0, ..parts }),
            Err(KernelError::ZeroBlock)
        ));
        assert!(matches!(
            QMatrix::from_parts(QMatrixParts {
                codes: &codes[..3],
                ..parts
            }),
            Err(KernelError::CodesLength { want: 4, .. })
        ));
    }

    #[test]
    fn bad_views_are_errors() {
        let t = [1.0f32; 16];
        let codes = [0u8; 6];
        let scales = [0u8; 8];
        assert!(QMatrix::new(2, 5, 4, &codes, &scales, ScaleDtype::F16, &t).is_ok());
        assert!(matches!(
            QMatrix::new(2, 5, 4, &codes[..5], &scales, ScaleDtype::F16, &t),
            Err(KernelError::CodesLength { want: 6, .. })
        ));
        assert!(matches!(
            QMatrix::new(2, 5, 4, &codes, &scales, ScaleDtype::F32, &t),
            Err(KernelError::ScalesLength { want: 16, .. })
        ));
        assert!(matches!(
            QMatrix::new(2, 5, 0, &codes, &scales, ScaleDtype::F16, &t),
            Err(KernelError::ZeroBlock)
        ));
        assert!(matches!(
            QMatrix::new(2, 5, 4, &codes, &scales, ScaleDtype::F16, &[1.0; 17]),
            Err(KernelError::TableSize(17))
        ));
        assert!(matches!(
            QMatrix::new(2, 5, 4, &codes, &scales, ScaleDtype::F16, &[]),
            Err(KernelError::TableSize(0))
        ));
        assert!(matches!(
            QMatrix::new(2, 5, 4, &codes, &scales, ScaleDtype::F16, &[f32::NAN, 1.0]),
            Err(KernelError::TableValue { index: 0, .. })
        ));
        assert!(matches!(
            QMatrix::new(usize::MAX, 5, 4, &codes, &scales, ScaleDtype::F16, &t),
            Err(KernelError::Overflow { .. })
        ));
    }
}
