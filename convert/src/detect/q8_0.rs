//! q8_0 tensors of tquant's layout (the embeddings and output head by default): codes
//! `I8 [.., rows, cols]`, f16 scales `[.., rows, ceil(cols / 32)]`, no codebook.

use super::{expect_part, part_shape, QuantSlot};
use crate::error::ConvertError;
use crate::schema::{QuantInfo, CODES_SUFFIX, SCALES_SUFFIX};
use crate::shards::ShardSet;
use safetensors::Dtype;
use std::path::Path;
use tquant_formats::q8_0::{Q8_BLOCK, Q8_NAME};
use tquant_formats::ScaleDtype;

/// Checks a q8_0 description against its parts. Every int8 code stands for a value, so the
/// codes themselves need no check; the scales are checked finite when the tensor is read.
pub(super) fn q8_slot(
    ckpt: &ShardSet,
    path: &Path,
    name: &str,
    mut info: QuantInfo,
) -> Result<QuantSlot, ConvertError> {
    let bad = |reason: String| ConvertError::tensor(path, name, reason);
    if info.bits != 8 || info.block != Q8_BLOCK || info.scale_dtype != ScaleDtype::F16 {
        return Err(bad(format!(
            "q8_0 has 8 bits, blocks of {Q8_BLOCK} and f16 scales; the metadata says bits {}, \
             block {}, {} scales",
            info.bits,
            info.block,
            info.scale_dtype.name()
        )));
    }
    let experts = info.experts();
    if info.matrices.len() != experts {
        return Err(bad(format!(
            "metadata describes {} matrices for {experts} experts",
            info.matrices.len()
        )));
    }
    if let Some((i, m)) = info
        .matrices
        .iter()
        .enumerate()
        .find(|(_, m)| m.format != Q8_NAME)
    {
        return Err(bad(format!(
            "matrix {i}: format '{}' in a q8_0 tensor",
            m.format
        )));
    }
    for m in &mut info.matrices {
        m.codebook.clear();
    }
    let (rows, cols) = (info.rows(), info.cols());
    let codes = format!("{name}{CODES_SUFFIX}");
    let scales = format!("{name}{SCALES_SUFFIX}");
    let code_shape = part_shape(&info, &[rows, cols]);
    expect_part(ckpt, (path, name), &codes, Dtype::I8, &code_shape)?;
    let scale_shape = part_shape(&info, &[rows, info.blocks_per_row()]);
    expect_part(ckpt, (path, name), &scales, Dtype::F16, &scale_shape)?;
    Ok(QuantSlot {
        info,
        codes: codes.clone(),
        scales: scales.clone(),
        parts: vec![codes, scales],
        nested: None,
        e4m3: None,
    })
}
