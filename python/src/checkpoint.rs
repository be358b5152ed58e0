//! `open`: a checkpoint (original or quantized) read memory-mapped; quantized tensors become
//! `QuantizedMatrix` values over the map, dense ones NumPy arrays.

use crate::array::to_numpy;
use crate::err;
use crate::matrix::{QuantizedMatrix, Storage};
use half::f16;
use pyo3::prelude::*;
use std::sync::Arc;
use tquant_convert::{Dtype, TensorView, Weight};

/// A checkpoint opened with `tquant.open` (the Python `tquant.Checkpoint` mapping wraps it).
#[derive(Debug)]
#[pyclass(frozen, module = "tquant._native", name = "NativeCheckpoint")]
pub struct Checkpoint {
    inner: Arc<tquant_convert::Checkpoint>,
}

/// Opens a `.safetensors` file or a checkpoint directory (every header validated here).
#[pyfunction]
pub(crate) fn open(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Checkpoint> {
    let c = py
        .detach(|| tquant_convert::Checkpoint::open(&path))
        .map_err(err)?;
    Ok(Checkpoint { inner: Arc::new(c) })
}

/// Little-endian elements of `bytes` (which may be unaligned in the map).
fn le<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks of N")))
        .collect()
}

/// A dense tensor as NumPy: its own dtype where NumPy has one, bf16 and FP8 widened to float32.
fn dense(py: Python<'_>, t: &TensorView<'_>) -> PyResult<Py<PyAny>> {
    let (b, s) = (t.bytes, t.shape);
    match t.dtype {
        Dtype::F32 if t.scales.is_none() => to_numpy(py, le(b, f32::from_le_bytes), s),
        Dtype::F16 => to_numpy(py, le(b, |c| f16::from_bits(u16::from_le_bytes(c))), s),
        Dtype::F64 => to_numpy(py, le(b, f64::from_le_bytes), s),
        Dtype::I64 => to_numpy(py, le(b, i64::from_le_bytes), s),
        Dtype::I32 => to_numpy(py, le(b, i32::from_le_bytes), s),
        Dtype::I16 => to_numpy(py, le(b, i16::from_le_bytes), s),
        Dtype::I8 => to_numpy(py, le(b, i8::from_le_bytes), s),
        Dtype::U64 => to_numpy(py, le(b, u64::from_le_bytes), s),
        Dtype::U32 => to_numpy(py, le(b, u32::from_le_bytes), s),
        Dtype::U16 => to_numpy(py, le(b, u16::from_le_bytes), s),
        Dtype::U8 => to_numpy(py, b.to_vec(), s),
        Dtype::BOOL => to_numpy(py, b.iter().map(|&v| v != 0).collect::<Vec<bool>>(), s),
        _ => {
            let values = py.detach(|| t.to_f32()).map_err(err)?;
            to_numpy(py, values, s)
        }
    }
}

#[pymethods]
impl Checkpoint {
    /// The tensor names (a quantized tensor under its original name), sorted.
    fn names(&self) -> Vec<String> {
        self.inner.names().map(str::to_string).collect()
    }

    /// Whether the checkpoint holds quantized tensors.
    fn is_quantized(&self) -> bool {
        self.inner.is_quantized()
    }

    /// The directory's `config.json` as a JSON string, or `None`.
    fn config_json(&self) -> Option<String> {
        self.inner.config().map(|v| v.to_string())
    }

    /// The checkpoint's root path.
    fn root(&self) -> std::path::PathBuf {
        self.inner.root().to_path_buf()
    }

    /// Tensor `name`: a `QuantizedMatrix` over the map for a quantized tensor (no copy), a new
    /// NumPy array for a dense one. A missing name raises `KeyError`.
    fn get(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        if !self.inner.names().any(|n| n == name) {
            return Err(pyo3::exceptions::PyKeyError::new_err(name.to_string()));
        }
        match self.inner.get(name).map_err(err)? {
            Weight::Quantized(_) => {
                let m = QuantizedMatrix::new(Storage::Mapped {
                    checkpoint: self.inner.clone(),
                    name: name.to_string(),
                })?;
                Ok(Py::new(py, m)?.into_any())
            }
            Weight::Dense(t) => dense(py, &t),
        }
    }
}
