//! Where the model's tensors come from: a [`TensorSource`] hands out float or quantized tensors by
//! checkpoint name; [`Loader`] checks names and shapes and builds [`Linear`] layers from them.

use crate::linear::{
    Bf16Data, DenseMatrix, Linear, Packed, Q8Data, Q8Linear, QuantMatrix, QuantTables,
};
use crate::ModelError;
use std::collections::HashMap;
use std::sync::Arc;
use tquant_formats::ScaleDtype;

/// A block-quantized tensor: 2-D `[rows, cols]`, or 3-D `[experts, rows, cols]` (fused experts,
/// each expert's rows consecutive, one codebook per expert).
#[derive(Debug, Clone)]
pub struct QuantTensor {
    /// `[rows, cols]` or `[experts, rows, cols]`.
    pub shape: Vec<usize>,
    /// Elements per block along a row.
    pub block: usize,
    /// How the scales are stored.
    pub scale_dtype: ScaleDtype,
    /// Where the codes and scales are.
    pub packed: Packed,
    /// Codebook values in code order: one table, or one per expert of a 3-D tensor.
    pub tables: Vec<Arc<[f32]>>,
    /// `learned_row`: a table per row of every expert (`experts * rows` rows), read instead of
    /// `tables`.
    pub row_tables: Option<Arc<crate::kernels::RowTables>>,
}

/// One tensor as a source hands it out.
#[derive(Debug, Clone)]
pub enum TensorData {
    /// Float values (any stored float dtype, widened to f32), row-major.
    Dense {
        /// The tensor's shape.
        shape: Vec<usize>,
        /// Its values.
        values: Vec<f32>,
    },
    /// bf16 values at their stored width, row-major (from [`TensorSource::stored`]).
    Bf16 {
        /// The tensor's shape.
        shape: Vec<usize>,
        /// Its values.
        data: Bf16Data,
    },
    /// f16 values at their stored width, row-major (from [`TensorSource::stored`]).
    F16 {
        /// The tensor's shape.
        shape: Vec<usize>,
        /// Its values (IEEE f16 bits).
        data: Bf16Data,
    },
    /// A block-quantized tensor.
    Quantized(QuantTensor),
    /// A q8_0 tensor (int8 codes, an f16 scale per 32 along a row).
    Q8 {
        /// `[rows, cols]` or `[experts, rows, cols]`.
        shape: Vec<usize>,
        /// Its codes and scales.
        data: Q8Data,
    },
}

impl TensorData {
    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::Dense { shape, .. }
            | Self::Bf16 { shape, .. }
            | Self::F16 { shape, .. }
            | Self::Q8 { shape, .. } => shape,
            Self::Quantized(q) => &q.shape,
        }
    }
}

/// Tensors by checkpoint name.
pub trait TensorSource: Sync {
    /// Whether the source holds `name`.
    fn contains(&self, name: &str) -> bool;
    /// The tensor `name`; an error names the file and the tensor.
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError>;
    /// Matrix `index` of the 3-D tensor `name` (one expert of a fused tensor) read without the
    /// others, where the source can; `None`: only whole tensors (the default).
    fn part(&self, _name: &str, _index: usize) -> Option<Result<TensorData, ModelError>> {
        None
    }
    /// The tensor `name` as the model holds it: [`TensorSource::tensor`], except that a source
    /// may hand out bf16 and f16 matrices at their stored width ([`TensorData::Bf16`],
    /// [`TensorData::F16`]) instead of widening them (the default widens).
    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        self.tensor(name)
    }
}

/// Tensors held in memory, optionally in front of another source (e.g. a checkpoint whose
/// matrices were quantized in memory): names found here win.
#[derive(Default)]
pub struct MemorySource<'a> {
    tensors: HashMap<String, TensorData>,
    fallback: Option<&'a dyn TensorSource>,
}

impl std::fmt::Debug for MemorySource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySource")
            .field("tensors", &self.tensors.len())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl<'a> MemorySource<'a> {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// In front of `fallback`: names not inserted here are read from it.
    pub fn over(fallback: &'a dyn TensorSource) -> Self {
        Self {
            tensors: HashMap::new(),
            fallback: Some(fallback),
        }
    }

    /// Adds (or replaces) tensor `name`.
    pub fn insert(&mut self, name: impl Into<String>, t: TensorData) {
        self.tensors.insert(name.into(), t);
    }
}

impl TensorSource for MemorySource<'_> {
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.fallback.is_some_and(|f| f.contains(name))
    }

    fn part(&self, name: &str, index: usize) -> Option<Result<TensorData, ModelError>> {
        match (self.tensors.contains_key(name), self.fallback) {
            (false, Some(f)) => f.part(name, index),
            _ => None,
        }
    }

    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        match (self.tensors.get(name), self.fallback) {
            (Some(TensorData::Bf16 { shape, data }), _) => Ok(TensorData::Dense {
                shape: shape.clone(),
                values: data.to_f32(),
            }),
            (Some(TensorData::F16 { shape, data }), _) => Ok(TensorData::Dense {
                shape: shape.clone(),
                values: data.f16_to_f32(),
            }),
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => f.tensor(name),
            (None, None) => Err(ModelError::tensor(name, "missing")),
        }
    }

    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        match (self.tensors.get(name), self.fallback) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(f)) => f.stored(name),
            (None, None) => Err(ModelError::tensor(name, "missing")),
        }
    }
}

/// Reads tensors with the shapes the config implies.
pub(crate) struct Loader<'a> {
    pub src: &'a dyn TensorSource,
}

impl Loader<'_> {
    fn get(&self, name: &str) -> Result<TensorData, ModelError> {
        if !self.src.contains(name) {
            return Err(ModelError::tensor(name, "missing from the checkpoint"));
        }
        self.src.stored(name)
    }

    /// A 1-D float vector (norm weights).
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        match self.get(name)? {
            TensorData::Dense { shape, values } if shape == [len] => Ok(values),
            TensorData::Bf16 { shape, data } if shape == [len] => Ok(data.to_f32()),
            TensorData::F16 { shape, data } if shape == [len] => Ok(data.f16_to_f32()),
            TensorData::Dense { shape, .. }
            | TensorData::Bf16 { shape, .. }
            | TensorData::F16 { shape, .. } => Err(ModelError::tensor(
                name,
                format!("shape {shape:?}, expected [{len}]"),
            )),
            TensorData::Quantized(_) | TensorData::Q8 { .. } => Err(ModelError::tensor(
                name,
                "is quantized; norm weights must be stored as floats",
            )),
        }
    }

    /// A `[rows, cols]` matrix.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Linear, ModelError> {
        let t = self.get(name)?;
        if t.shape() != [rows, cols] {
            return Err(ModelError::tensor(
                name,
                format!("shape {:?}, expected [{rows}, {cols}]", t.shape()),
            ));
        }
        let mut v = to_linears(name, t, 1, rows, cols)?;
        Ok(v.remove(0))
    }

    /// A fused `[experts, rows, cols]` tensor, one matrix per expert.
    pub fn stacked(
        &self,
        name: &str,
        experts: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<Linear>, ModelError> {
        let t = self.get(name)?;
        if t.shape() != [experts, rows, cols] {
            return Err(ModelError::tensor(
                name,
                format!(
                    "shape {:?}, expected [{experts}, {rows}, {cols}]",
                    t.shape()
                ),
            ));
        }
        to_linears(name, t, experts, rows, cols)
    }
}

impl Loader<'_> {
    /// Matrix `index` of a fused `[experts, rows, cols]` tensor, read alone where the source
    /// can (else the whole tensor is read and the other matrices dropped).
    pub fn stacked_one(
        &self,
        name: &str,
        index: usize,
        experts: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Linear, ModelError> {
        if !self.src.contains(name) {
            return Err(ModelError::tensor(name, "missing from the checkpoint"));
        }
        match self.src.part(name, index) {
            Some(t) => {
                let t = t?;
                if t.shape() != [rows, cols] {
                    return Err(ModelError::tensor(
                        name,
                        format!(
                            "matrix {index} has shape {:?}, expected [{rows}, {cols}]",
                            t.shape()
                        ),
                    ));
                }
                Ok(to_linears(name, t, 1, rows, cols)?.remove(0))
            }
            None => Ok(self.stacked(name, experts, rows, cols)?.swap_remove(index)),
        }
    }
}

/// Splits a tensor of `experts * rows` rows into `experts` matrices sharing its storage.
fn to_linears(
    name: &str,
    t: TensorData,
    experts: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<Linear>, ModelError> {
    match t {
        TensorData::Dense { values, .. } => {
            let whole = Linear::Dense(DenseMatrix::new(experts * rows, cols, values));
            Ok((0..experts)
                .map(|e| whole.row_range(e * rows, rows))
                .collect())
        }
        TensorData::Bf16 { data, .. } => {
            let whole = Linear::Dense(DenseMatrix::bf16(experts * rows, cols, data));
            Ok((0..experts)
                .map(|e| whole.row_range(e * rows, rows))
                .collect())
        }
        TensorData::F16 { data, .. } => {
            let whole = Linear::Dense(DenseMatrix::f16(experts * rows, cols, data));
            Ok((0..experts)
                .map(|e| whole.row_range(e * rows, rows))
                .collect())
        }
        TensorData::Q8 { data, .. } => {
            let whole = Q8Linear::new(experts * rows, cols, data, 0)
                .map_err(|e| ModelError::tensor(name, e.to_string()))?;
            let whole = Linear::Q8(whole);
            Ok((0..experts)
                .map(|e| whole.row_range(e * rows, rows))
                .collect())
        }
        TensorData::Quantized(q) => {
            if q.tables.len() != 1 && q.tables.len() != experts {
                return Err(ModelError::tensor(
                    name,
                    format!(
                        "{} codebooks for {experts} experts (need 1 or one per expert)",
                        q.tables.len()
                    ),
                ));
            }
            (0..experts)
                .map(|e| {
                    let tables: QuantTables = match &q.row_tables {
                        Some(t) => t.clone().into(),
                        None => q.tables[e.min(q.tables.len() - 1)].clone().into(),
                    };
                    QuantMatrix::new(
                        rows,
                        cols,
                        q.block,
                        q.scale_dtype,
                        q.packed.clone(),
                        e * rows,
                        tables,
                    )
                    .map(Linear::Quant)
                    .map_err(|e| ModelError::tensor(name, e.to_string()))
                })
                .collect()
        }
    }
}

/// Hands out `inner`'s tensors, passing every float matrix (2-D or 3-D) through `quantize`
/// first: a model quantized in memory as it loads (`None` keeps the tensor as floats).
pub struct QuantizeOnLoad<'a, F> {
    /// The source of the tensors.
    pub inner: &'a dyn TensorSource,
    /// Quantizes a float matrix: `(name, shape, values)` to its quantized form, or `None`.
    pub quantize: F,
}

impl<F> std::fmt::Debug for QuantizeOnLoad<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuantizeOnLoad")
    }
}

impl<F> TensorSource for QuantizeOnLoad<'_, F>
where
    F: Fn(&str, &[usize], &[f32]) -> Result<Option<QuantTensor>, ModelError> + Sync,
{
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.quantized(self.inner.tensor(name)?, name)
    }

    /// A bf16 (f16) matrix left unquantized stays bf16 (f16); the policy sees its values
    /// widened.
    fn stored(&self, name: &str) -> Result<TensorData, ModelError> {
        match self.inner.stored(name)? {
            TensorData::Bf16 { shape, data } if shape.len() >= 2 => {
                let values = data.to_f32();
                match self.quantized(TensorData::Dense { shape, values }, name)? {
                    TensorData::Dense { shape, .. } => Ok(TensorData::Bf16 { shape, data }),
                    q => Ok(q),
                }
            }
            TensorData::F16 { shape, data } if shape.len() >= 2 => {
                let values = data.f16_to_f32();
                match self.quantized(TensorData::Dense { shape, values }, name)? {
                    TensorData::Dense { shape, .. } => Ok(TensorData::F16 { shape, data }),
                    q => Ok(q),
                }
            }
            t => self.quantized(t, name),
        }
    }
}

impl<F> QuantizeOnLoad<'_, F>
where
    F: Fn(&str, &[usize], &[f32]) -> Result<Option<QuantTensor>, ModelError> + Sync,
{
    fn quantized(&self, t: TensorData, name: &str) -> Result<TensorData, ModelError> {
        match &t {
            TensorData::Dense { shape, values } if shape.len() >= 2 => {
                Ok(match (self.quantize)(name, shape, values)? {
                    Some(q) if q.shape == *shape => TensorData::Quantized(q),
                    Some(q) => {
                        return Err(ModelError::tensor(
                            name,
                            format!("quantized to shape {:?}, not {shape:?}", q.shape),
                        ))
                    }
                    None => t,
                })
            }
            _ => Ok(t),
        }
    }
}

impl QuantTensor {
    /// Stacks matrices quantized by `tquant_formats::BlockQuantizer` (one per expert, or a
    /// single 2-D matrix), each with its codebook values.
    pub fn from_matrices(
        parts: Vec<(tquant_formats::QuantizedMatrix, Vec<f32>)>,
    ) -> Result<Self, ModelError> {
        let Some((first, _)) = parts.first() else {
            return Err(ModelError::NothingToStack);
        };
        let (rows, cols, block, sd) = (first.rows, first.cols, first.block, first.scale_dtype);
        if parts
            .iter()
            .any(|(m, _)| (m.rows, m.cols, m.block, m.scale_dtype) != (rows, cols, block, sd))
        {
            return Err(ModelError::StackMismatch);
        }
        let shape = if parts.len() == 1 {
            vec![rows, cols]
        } else {
            vec![parts.len(), rows, cols]
        };
        let mut codes = Vec::new();
        let mut scales = Vec::new();
        let mut tables = Vec::new();
        for (m, t) in parts {
            codes.extend_from_slice(&m.codes);
            scales.extend_from_slice(&m.scales);
            tables.push(Arc::from(t));
        }
        Ok(Self {
            shape,
            block,
            scale_dtype: sd,
            packed: Packed::owned(codes, scales),
            tables,
            row_tables: None,
        })
    }
}

/// A quantize-on-load rule for tests and benches: round-to-nearest with `format`'s codebook of
/// every matrix inside the decoder layers except the MoE router (embeddings, LM head, router and
/// norms stay float). `tquant report` and `tquant convert` use tquant-convert's policy instead.
pub fn rtn_decoder_matrices(
    format: tquant_formats::Format,
    quantizer: tquant_formats::BlockQuantizer,
) -> impl Fn(&str, &[usize], &[f32]) -> Result<Option<QuantTensor>, ModelError> + Sync {
    move |name: &str, shape: &[usize], values: &[f32]| {
        if !name.starts_with("model.layers.") || name.ends_with("mlp.gate.weight") {
            return Ok(None);
        }
        let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let cb = format.codebook();
        let parts = values
            .chunks(rows * cols)
            .map(|m| {
                quantizer
                    .quantize(cb, m, rows, cols)
                    .map(|q| (q, cb.values().to_vec()))
                    .map_err(|e| ModelError::tensor(name, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        QuantTensor::from_matrices(parts).map(Some)
    }
}
