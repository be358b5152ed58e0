//! Checkpoints through tquant-convert's reader: original (bf16/f16/f32, sharded) or quantized.
//!
//! Quantized tensors stay in the memory map: a [`Packed::Mapped`] (a q8_0 tensor's
//! [`Q8Data::Mapped`]) holds the checkpoint and the tensor's name, and each product borrows the codes and scales from the map again (a lookup,
//! no copy). bf16 and f16 matrices do the same through [`Bf16Data::Mapped`] (copied once, still
//! 16-bit, if the file places them at an odd byte offset). Other float tensors (f32, FP8 with
//! block scales, 1-D bf16 and f16 vectors) are widened to f32 in memory.

use crate::kernels;
use crate::linear::{Bf16Data, Packed, Q8Data};
use crate::weights::{QuantTensor, TensorData, TensorSource};
use crate::ModelError;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tquant_convert::{Checkpoint, Dtype, Layout, TensorView, Weight};

/// A checkpoint as a [`TensorSource`].
#[derive(Debug)]
pub struct CheckpointSource {
    ckpt: Arc<Checkpoint>,
    names: HashSet<String>,
    held_as_f32: Mutex<Vec<String>>,
}

/// Opens a checkpoint file or directory.
pub fn checkpoint_source(path: &Path) -> Result<CheckpointSource, ModelError> {
    let ckpt = Checkpoint::open(path)?;
    Ok(CheckpointSource {
        names: ckpt.names().map(str::to_string).collect(),
        ckpt: Arc::new(ckpt),
        held_as_f32: Mutex::new(Vec::new()),
    })
}

impl CheckpointSource {
    /// The checkpoint read.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ckpt
    }

    /// Things worth telling the user about how tensors were loaded (e.g. a layout that had to
    /// be dequantized because no kernel reads it).
    pub fn notes(&self) -> Vec<String> {
        let held = self
            .held_as_f32
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default();
        match held.as_slice() {
            [] => Vec::new(),
            [first, ..] => vec![format!(
                "{} tensor(s) in bitsandbytes layout held dequantized as f32 (its blocks run over \
                 the flattened tensor; the kernels read tquant and mxfp4 layouts), e.g. {first}",
                held.len()
            )],
        }
    }
}

impl TensorSource for CheckpointSource {
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// A float 3-D tensor's matrix is widened alone (one expert, not all of them).
    fn part(&self, name: &str, index: usize) -> Option<Result<TensorData, ModelError>> {
        let Ok(Weight::Dense(t)) = self.ckpt.get(name) else {
            return None;
        };
        let &[n, rows, cols] = t.shape else {
            return None;
        };
        if index >= n {
            return Some(Err(ModelError::tensor(
                name,
                format!("has {n} matrices, asked for matrix {index}"),
            )));
        }
        let per = t.bytes.len() / n;
        let shape = [rows, cols];
        let one = TensorView {
            shape: &shape,
            bytes: &t.bytes[index * per..(index + 1) * per],
            ..t
        };
        Some(
            one.to_f32()
                .map(|values| TensorData::Dense {
                    shape: shape.to_vec(),
                    values,
                })
                .map_err(ModelError::from),
        )
    }

    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        match self.ckpt.get(name)? {
            Weight::Dense(t)
                if matches!(t.dtype, Dtype::BF16 | Dtype::F16)
                    && t.scales.is_none()
                    && t.shape.len() >= 2 =>
            {
                let f16 = t.dtype == Dtype::F16;
                if t.bytes.len() != 2 * t.numel() {
                    let what = if f16 { "f16" } else { "bf16" };
                    return Err(ModelError::tensor(
                        name,
                        format!("{} bytes for {} {what} values", t.bytes.len(), t.numel()),
                    ));
                }
                let data = match kernels::bf16_bits(t.bytes) {
                    Some(_) => Bf16Data::Mapped {
                        ckpt: self.ckpt.clone(),
                        name: name.into(),
                    },
                    None => Bf16Data::Owned(
                        t.bytes
                            .chunks_exact(2)
                            .map(|b| u16::from_le_bytes([b[0], b[1]]))
                            .collect(),
                    ),
                };
                let shape = t.shape.to_vec();
                Ok(match f16 {
                    true => TensorData::F16 { shape, data },
                    false => TensorData::Bf16 { shape, data },
                })
            }
            _ => self.tensor(name),
        }
    }

    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        match self.ckpt.get(name)? {
            Weight::Dense(t) => Ok(TensorData::Dense {
                shape: t.shape.to_vec(),
                values: self.ckpt.dense_f32(t.name)?,
            }),
            Weight::Quantized(v) if v.info.layout == Layout::Bnb => {
                // bitsandbytes blocks run over the flattened tensor, not along rows: no kernel
                // reads them, so this tensor is held as f32 (and the user is told).
                if let Ok(mut n) = self.held_as_f32.lock() {
                    n.push(name.to_string());
                }
                Ok(TensorData::Dense {
                    shape: v.shape().to_vec(),
                    values: Weight::Quantized(v).to_f32()?,
                })
            }
            Weight::Quantized(v) if v.info.is_q8_0() => {
                let data = match kernels::bf16_bits(v.scales) {
                    Some(_) => Q8Data::Mapped {
                        ckpt: self.ckpt.clone(),
                        name: name.into(),
                    },
                    // Scales at an odd address: copied once.
                    None => Q8Data::Owned {
                        codes: kernels::int8::i8_codes(v.codes).into(),
                        scales: v
                            .scales
                            .chunks_exact(2)
                            .map(|b| u16::from_le_bytes([b[0], b[1]]))
                            .collect(),
                    },
                };
                Ok(TensorData::Q8 {
                    shape: v.shape().to_vec(),
                    data,
                })
            }
            Weight::Quantized(v) => Ok(TensorData::Quantized(QuantTensor {
                shape: v.shape().to_vec(),
                block: v.info.block,
                scale_dtype: v.info.scale_dtype,
                packed: Packed::Mapped {
                    ckpt: self.ckpt.clone(),
                    name: name.into(),
                },
                tables: (0..v.experts()).map(|e| Arc::from(v.codebook(e))).collect(),
                row_tables: row_tables(name, &v)?,
            })),
        }
    }
}

/// `learned_row`: every expert's row tables as one [`kernels::RowTables`] (rows of all experts in
/// order, as the codes are), or `None` for a tensor with a table per matrix.
fn row_tables(
    name: &str,
    v: &tquant_convert::QuantizedView<'_>,
) -> Result<Option<Arc<kernels::RowTables>>, ModelError> {
    if v.row_tables(0).is_none() {
        return Ok(None);
    }
    let mut all = Vec::new();
    for e in 0..v.experts() {
        all.extend_from_slice(v.row_tables(e).unwrap_or_default());
    }
    let per_row = 1usize << v.info.bits;
    kernels::RowTables::new(&all, per_row)
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| ModelError::tensor(name, e.to_string()))
}
