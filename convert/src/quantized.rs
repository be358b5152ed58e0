//! What a quantized tensor is, whichever way it is stored: its description ([`QuantInfo`], kept
//! in the file's `__metadata__` for tquant's own layout), borrowed views of its bytes
//! ([`QuantizedView`]) and owned results of the in-memory quantizer ([`QuantizedTensor`]).

use tquant_formats::pack::{code_at, row_bytes};
use tquant_kernels::QMatrix;

use crate::error::ConvertError;
pub use crate::schema::{
    FitInfo, Layout, MatrixInfo, QuantInfo, CODEBOOK_SUFFIX, CODES_SUFFIX, FORMAT_VERSION,
    META_PREFIX, META_VERSION, SCALES_SUFFIX,
};

/// One matrix for the kernels (`tquant_kernels::QMatrix::from_parts`): tquant's code layout,
/// scales `[rows, blocks_per_row]`, the codebook in code order.
pub type MatrixRef<'a> = tquant_kernels::QMatrixParts<'a>;

/// A quantized tensor's bytes, borrowed from a checkpoint or a [`QuantizedTensor`].
#[derive(Debug, Clone, Copy)]
pub struct QuantizedView<'a> {
    /// The tensor name.
    pub name: &'a str,
    /// Its description.
    pub info: &'a QuantInfo,
    /// All matrices' packed codes, matrix after matrix.
    pub codes: &'a [u8],
    /// All matrices' scales as stored (`info.scale_dtype`), matrix after matrix.
    pub scales: &'a [u8],
}

/// A code in the file that points past the codebook.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tensor '{tensor}': code {code} at element {index} is outside its {len}-entry codebook")]
pub struct BadCode {
    /// The tensor.
    pub tensor: String,
    /// The code.
    pub code: u8,
    /// Its element, in the flattened tensor.
    pub index: usize,
    /// Entries of the codebook.
    pub len: usize,
}

impl<'a> QuantizedView<'a> {
    /// Logical shape.
    pub fn shape(&self) -> &'a [usize] {
        &self.info.shape
    }

    /// Matrices (experts): 1 for a 2-D tensor.
    pub fn experts(&self) -> usize {
        self.info.experts()
    }

    /// Format name of matrix `e` (`sf4:nu=4.237`).
    pub fn format(&self, e: usize) -> &'a str {
        &self.info.matrices[e].format
    }

    /// The codebook of matrix `e`, in code order.
    pub fn codebook(&self, e: usize) -> &'a [f32] {
        &self.info.matrices[e].codebook
    }

    /// `learned_row`: matrix `e`'s tables, `[rows, 16]` row by row (for
    /// `tquant_kernels::RowTables::new(values, 16)`); `None` for a tensor with one table per matrix.
    pub fn row_tables(&self, e: usize) -> Option<&'a [f32]> {
        let t = &self.info.matrices.get(e)?.row_tables;
        (!t.is_empty()).then_some(t.as_slice())
    }

    /// Matrix `e` (0 for a 2-D tensor) in tquant's code layout, or `None` for bitsandbytes'
    /// flattened layout, which no kernel reads directly, for q8_0 (no codebook:
    /// [`QuantizedView::q8_matrix`]) and for a table per row (`learned_row`:
    /// [`QuantizedView::row_tables`] and `QMatrix::with_row_tables`).
    pub fn matrix(&self, e: usize) -> Option<MatrixRef<'a>> {
        let i = self.info;
        if i.layout == Layout::Bnb
            || i.is_q8_0()
            || e >= i.experts()
            || self.row_tables(e).is_some()
        {
            return None;
        }
        let (cb, sb) = (i.matrix_code_bytes(), i.matrix_scale_bytes());
        // Bytes shorter than the description (a view built by hand) give a short part, which
        // `QMatrix::from_parts` reports, rather than a panic here.
        let part = |all: &'a [u8], n: usize| {
            all.get(e * n..(e + 1) * n)
                .unwrap_or_else(|| &all[(e * n).min(all.len())..])
        };
        Some(MatrixRef {
            rows: i.rows(),
            cols: i.cols(),
            block: i.block,
            codes: part(self.codes, cb),
            scales: part(self.scales, sb),
            scale_dtype: i.scale_dtype,
            table: &i.matrices[e].codebook,
        })
    }

    /// The kernels' view of matrix `e` (0 for a 2-D tensor), checked: an error for bitsandbytes'
    /// flattened layout, an expert past the end, or parts that do not match the shape.
    pub fn qmatrix(&self, e: usize) -> Result<QMatrix<'a>, ConvertError> {
        let invalid = |reason: String| ConvertError::Invalid {
            tensor: self.name.to_string(),
            reason,
        };
        if self.info.layout == Layout::Bnb {
            return Err(invalid(
                "bitsandbytes' flattened layout has no per-row matrix for the kernels; \
                 dequantize it instead"
                    .into(),
            ));
        }
        if self.info.is_q8_0() {
            return Err(invalid(
                "q8_0 has no codebook: take it with QuantizedView::q8_matrix".into(),
            ));
        }
        if self.row_tables(e).is_some() {
            return Err(invalid(
                "learned_row has a table per row: build the view with QMatrix::with_row_tables \
                 from QuantizedView::row_tables"
                    .into(),
            ));
        }
        let parts = self.matrix(e).ok_or_else(|| {
            invalid(format!(
                "expert {e} asked for, the tensor has {}",
                self.experts()
            ))
        })?;
        QMatrix::from_parts(parts).map_err(|err| ConvertError::Kernel {
            tensor: self.name.to_string(),
            source: err,
        })
    }

    /// The kernels' view of q8_0 matrix `e` (0 for a 2-D tensor), checked: an error for
    /// another format, an expert past the end, parts that do not match the shape, or scales
    /// not on a 2-byte boundary in memory (never so in tquant's files).
    pub fn q8_matrix(&self, e: usize) -> Result<tquant_kernels::Q8Matrix<'a>, ConvertError> {
        let invalid = |reason: String| ConvertError::Invalid {
            tensor: self.name.to_string(),
            reason,
        };
        let i = self.info;
        if !i.is_q8_0() {
            return Err(invalid(format!("format '{}' is not q8_0", i.format)));
        }
        if e >= i.experts() {
            return Err(invalid(format!(
                "expert {e} asked for, the tensor has {}",
                i.experts()
            )));
        }
        let (cb, sb) = (i.matrix_code_bytes(), i.matrix_scale_bytes());
        let codes = self.codes.get(e * cb..(e + 1) * cb).unwrap_or(&[]);
        let scales = self.scales.get(e * sb..(e + 1) * sb).unwrap_or(&[]);
        let scales = tquant_kernels::bf16_bits(scales)
            .ok_or_else(|| invalid("f16 scales not on a 2-byte boundary".into()))?;
        let codes = tquant_kernels::int8::i8_codes(codes);
        tquant_kernels::Q8Matrix::new(i.rows(), i.cols(), codes, scales).map_err(|err| {
            ConvertError::Kernel {
                tensor: self.name.to_string(),
                source: err,
            }
        })
    }

    /// Where the first stored scale that is not a finite number is (NaN or infinite: an
    /// all-ones exponent in f32, f16 or bf16, an E8M0 byte 255), as a message; `None` when all
    /// are finite. Such a scale would turn its whole block into NaN in every product.
    pub fn non_finite_scale(&self) -> Option<String> {
        let i = self.info;
        let dtype = i.scale_dtype;
        let count = self.scales.len() / dtype.size();
        let k = (0..count).find(|&k| !dtype.read(self.scales, k).is_finite())?;
        let value = dtype.read(self.scales, k);
        let at = if i.layout == Layout::Bnb {
            format!("absmax {k} (elements {}..)", k * i.block)
        } else {
            let per_matrix = (i.rows() * i.blocks_per_row()).max(1);
            let (e, j) = (k / per_matrix, k % per_matrix);
            let (r, b) = (j / i.blocks_per_row(), j % i.blocks_per_row());
            let expert = if i.experts() > 1 {
                format!("expert {e}, ")
            } else {
                String::new()
            };
            format!("{expert}row {r}, block {b}")
        };
        Some(format!(
            "stored scale {value} ({} {at}) is not finite",
            dtype.name()
        ))
    }

    /// Dequantizes matrix `e` into row-major f32 (tquant and MXFP4 layouts).
    pub fn dequantize_matrix(&self, e: usize) -> Result<Vec<f32>, BadCode> {
        let i = self.info;
        let (rows, cols) = (i.rows(), i.cols());
        let mut out = vec![0.0f32; rows * cols];
        if i.layout == Layout::Bnb {
            let all = self.dequantize()?;
            out.copy_from_slice(&all[e * rows * cols..(e + 1) * rows * cols]);
            return Ok(out);
        }
        let (cb, sb) = (i.matrix_code_bytes(), i.matrix_scale_bytes());
        let codes = &self.codes[e * cb..(e + 1) * cb];
        let scales = &self.scales[e * sb..(e + 1) * sb];
        if i.is_q8_0() {
            // int8 codes times the f16 scale of their block of 32.
            let nb = i.blocks_per_row();
            for (k, o) in out.iter_mut().enumerate() {
                let (r, c) = (k / cols, k % cols);
                let s = i.scale_dtype.read(scales, r * nb + c / i.block);
                *o = codes[k] as i8 as f32 * s;
            }
            return Ok(out);
        }
        let rb = row_bytes(cols);
        let nb = i.blocks_per_row();
        let row_tables = self.row_tables(e);
        for r in 0..rows {
            let table = match row_tables {
                Some(t) => {
                    let len = t.len() / rows;
                    &t[r * len..(r + 1) * len]
                }
                None => &i.matrices[e].codebook[..],
            };
            let packed = &codes[r * rb..(r + 1) * rb];
            for c in 0..cols {
                let code = code_at(packed, c);
                let v = *table.get(code as usize).ok_or_else(|| BadCode {
                    tensor: self.name.to_string(),
                    code,
                    index: e * rows * cols + r * cols + c,
                    len: table.len(),
                })?;
                out[r * cols + c] = v * i.scale_dtype.read(scales, r * nb + c / i.block);
            }
        }
        Ok(out)
    }

    /// Dequantizes the whole tensor (all experts) into row-major f32.
    pub fn dequantize(&self) -> Result<Vec<f32>, BadCode> {
        let i = self.info;
        if i.layout != Layout::Bnb {
            let mut out = Vec::with_capacity(i.numel());
            for e in 0..self.experts() {
                out.extend(self.dequantize_matrix(e)?);
            }
            return Ok(out);
        }
        // bitsandbytes: blocks over the flattened tensor; element 2j in the high nibble.
        let table = &i.matrices[0].codebook;
        (0..i.numel())
            .map(|k| {
                let b = self.codes[k / 2];
                let code = if k % 2 == 0 { b >> 4 } else { b & 0x0f };
                let v = table.get(code as usize).ok_or_else(|| BadCode {
                    tensor: self.name.to_string(),
                    code,
                    index: k,
                    len: table.len(),
                })?;
                Ok(v * i.scale_dtype.read(self.scales, k / i.block))
            })
            .collect()
    }
}

/// The kernels' view of a 2-D quantized tensor in one call (a 3-D tensor of experts is an
/// error: take one with [`QuantizedView::qmatrix`]).
///
/// ```
/// use tquant_convert::{quantize_tensor, ConvertOptions, Dtype};
/// use tquant_kernels::{matmul, Mode, QMatrix};
///
/// let w: Vec<f32> = (0..8 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
/// let t = quantize_tensor("w", &w, &[8, 64], Dtype::F32, &ConvertOptions::default())?;
/// let q = QMatrix::try_from(&t.view())?;
/// let x = vec![1.0f32; 64];
/// let mut y = vec![0.0f32; 8];
/// matmul(&q, &x, 1, &mut y, Mode::Exact)?;
/// let dense = t.dequantize();
/// assert!((y[0] - dense[..64].iter().sum::<f32>()).abs() < 1e-4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<'a> TryFrom<&QuantizedView<'a>> for QMatrix<'a> {
    type Error = ConvertError;
    fn try_from(view: &QuantizedView<'a>) -> Result<Self, ConvertError> {
        if view.experts() != 1 {
            return Err(ConvertError::Invalid {
                tensor: view.name.to_string(),
                reason: format!(
                    "{} experts: take one matrix with QuantizedView::qmatrix(expert)",
                    view.experts()
                ),
            });
        }
        view.qmatrix(0)
    }
}

/// An owned quantized tensor: the result of quantizing one tensor in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    /// The tensor name.
    pub name: String,
    /// Its description, with each matrix's format and codebook.
    pub info: QuantInfo,
    /// All matrices' packed codes, matrix after matrix.
    pub codes: Vec<u8>,
    /// All matrices' scales, matrix after matrix.
    pub scales: Vec<u8>,
}

impl QuantizedTensor {
    /// The borrowed view the readers and kernels take.
    pub fn view(&self) -> QuantizedView<'_> {
        QuantizedView {
            name: &self.name,
            info: &self.info,
            codes: &self.codes,
            scales: &self.scales,
        }
    }

    /// Matrix `e` for the kernels (see [`QuantizedView::matrix`]).
    pub fn matrix(&self, e: usize) -> Option<MatrixRef<'_>> {
        self.view().matrix(e)
    }

    /// The whole tensor (all experts) dequantized, row-major f32.
    pub fn dequantize(&self) -> Vec<f32> {
        // The codes were produced by the quantizer from these codebooks: always in range.
        self.view()
            .dequantize()
            .expect("quantizer output codes index their codebook")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{quantize_tensor, ConvertError, ConvertOptions, Dtype};
    use tquant_kernels::{matmul, Mode};

    fn quantized(shape: &[usize], layout: Layout) -> QuantizedTensor {
        let n: usize = shape.iter().product();
        let w: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
            .collect();
        let opts = ConvertOptions::builder().layout(layout).build().unwrap();
        quantize_tensor("t", &w, shape, Dtype::F32, &opts).unwrap()
    }

    /// Multiplies `q` by the unit vectors and compares with the dequantized matrix.
    fn assert_same_matrix(q: &QMatrix<'_>, dense: &[f32]) {
        let (rows, cols) = (q.rows(), q.cols());
        let mut x = vec![0.0f32; cols * cols];
        for c in 0..cols {
            x[c * cols + c] = 1.0;
        }
        let mut y = vec![0.0f32; cols * rows];
        matmul(q, &x, cols, &mut y, Mode::Exact).unwrap();
        for c in 0..cols {
            for r in 0..rows {
                assert_eq!(y[c * rows + r], dense[r * cols + c], "({r}, {c})");
            }
        }
    }

    #[test]
    fn a_2d_tensor_becomes_a_qmatrix_in_one_call() {
        let t = quantized(&[6, 70], Layout::Tquant);
        let q = QMatrix::try_from(&t.view()).unwrap();
        assert_eq!((q.rows(), q.cols(), q.block()), (6, 70, 64));
        assert_eq!(q.table_len(), 16);
        assert_same_matrix(&q, &t.dequantize());
    }

    #[test]
    fn each_expert_of_a_3d_tensor_is_a_qmatrix() {
        let t = quantized(&[3, 4, 64], Layout::Tquant);
        let dense = t.dequantize();
        for e in 0..3 {
            let q = t.view().qmatrix(e).unwrap();
            assert_same_matrix(&q, &dense[e * 4 * 64..(e + 1) * 4 * 64]);
        }
        let err = t.view().qmatrix(3).unwrap_err().to_string();
        assert!(err.contains("expert 3") && err.contains("'t'"), "{err}");
        let err = QMatrix::try_from(&t.view()).unwrap_err().to_string();
        assert!(err.contains("3 experts"), "{err}");
    }

    #[test]
    fn bitsandbytes_layout_and_bad_parts_are_errors() {
        let t = quantized(&[4, 64], Layout::Bnb);
        let err = QMatrix::try_from(&t.view()).unwrap_err().to_string();
        assert!(err.contains("bitsandbytes"), "{err}");
        let t = quantized(&[4, 64], Layout::Tquant);
        let mut view = t.view();
        view.codes = &t.codes[1..];
        let err = QMatrix::try_from(&view).unwrap_err();
        assert!(
            matches!(err, ConvertError::Kernel { ref tensor, source: tquant_kernels::KernelError::CodesLength { .. } } if tensor == "t"),
            "{err}"
        );
    }
}
