//! Matrices of a tquant checkpoint that are already in a ggml type's terms (its 16 values as
//! the codebook, blocks of 32, f16 scales): their codes and scales moved into ggml's blocks,
//! nothing rounded again. This is how codes chosen by GPTQ reach a GGUF file; q8_0 matrices
//! move into ggml's Q8_0 the same way.

use super::blocks::{GgmlType, QK};
use crate::quantized::MatrixRef;
use crate::schema::Layout;
use crate::QuantizedView;
use tquant_formats::ScaleDtype;

/// Why a quantized matrix cannot be moved into `ty`'s blocks, or `None` when it can.
pub fn mismatch(v: &QuantizedView<'_>, ty: GgmlType) -> Option<String> {
    let i = v.info;
    let Some(table) = ty.table() else {
        return Some(format!(
            "it is quantized and {} is not a 4-bit table type",
            ty.name()
        ));
    };
    let want: Vec<f32> = table.iter().map(|&t| t as f32).collect();
    let tables_ok = (0..i.experts()).all(|e| v.codebook(e) == want.as_slice());
    if i.layout != Layout::Tquant
        || i.block != QK
        || i.scale_dtype != ScaleDtype::F16
        || i.cols() % QK != 0
        || !tables_ok
    {
        return Some(format!(
            "it is quantized as {} ({} layout, block {}, {} scales), not in {}'s terms \
             (the codebook custom:{} in blocks of 32 with f16 scales); convert from the \
             unquantized checkpoint, or quantize it with that codebook",
            i.format,
            i.layout.name(),
            i.block,
            i.scale_dtype.name(),
            ty.name(),
            want.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    None
}

/// ggml blocks of rows `rows` of a matrix that passed [`mismatch`].
pub fn repack(m: &MatrixRef<'_>, rows: std::ops::Range<usize>) -> Vec<u8> {
    let blocks = m.cols / QK;
    let row_bytes = m.cols / 2;
    let mut out = Vec::with_capacity(rows.len() * blocks * (2 + QK / 2));
    for r in rows {
        let codes = &m.codes[r * row_bytes..(r + 1) * row_bytes];
        for b in 0..blocks {
            let s = 2 * (r * blocks + b);
            out.extend_from_slice(&m.scales[s..s + 2]);
            // tquant: element 2k in the low nibble of byte k of the block's 16 bytes.
            let code = |k: usize| (codes[b * QK / 2 + k / 2] >> (4 * (k % 2))) & 15;
            out.extend((0..QK / 2).map(|j| code(j) | (code(j + QK / 2) << 4)));
        }
    }
    out
}

/// ggml's `block_q8_0` stream of a q8_0 matrix whose rows are whole blocks (checked by the
/// type's planning): per block the f16 scale, then its 32 codes.
pub fn repack_q8_0(m: &tquant_kernels::Q8Matrix<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.rows() * (m.cols() + 2 * m.blocks_per_row()));
    for r in 0..m.rows() {
        for (s, q) in m.row_scales(r).iter().zip(m.row_codes(r).chunks(QK)) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend(q.iter().map(|&c| c as u8));
        }
    }
    out
}
