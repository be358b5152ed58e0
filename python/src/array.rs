//! NumPy arrays in and out. Weights and activations arrive as float32, float16 or bfloat16 (the
//! latter as its uint16 / int16 bits with the `bf16` flag, since NumPy has no bfloat16 dtype);
//! the library computes in f32, so float32 in C order is borrowed and anything else is widened
//! into one f32 copy.

use crate::err;
use half::{bf16, f16};
use numpy::ndarray::{ArrayD, ArrayViewD, IxDyn};
use numpy::{IntoPyArray, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;
use std::borrow::Cow;

/// The element type of an input, which `fake_quantize` returns again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
    Bf16,
}

/// A read-only NumPy array of one of the accepted element types.
pub(crate) enum Input<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F16(PyReadonlyArrayDyn<'py, f16>),
    /// bfloat16 bits, from a uint16 or int16 array.
    Bf16U(PyReadonlyArrayDyn<'py, u16>),
    Bf16I(PyReadonlyArrayDyn<'py, i16>),
}

/// A borrowed view of an [`Input`], which may cross into code that runs without the GIL.
pub(crate) enum View<'a> {
    F32(ArrayViewD<'a, f32>),
    F16(ArrayViewD<'a, f16>),
    Bf16U(ArrayViewD<'a, u16>),
    Bf16I(ArrayViewD<'a, i16>),
}

impl<'py> Input<'py> {
    /// `obj` (a NumPy array) as an input; `bf16` says a uint16 / int16 array holds bfloat16 bits.
    /// `what` names the argument in errors.
    pub(crate) fn extract(obj: &Bound<'py, PyAny>, bf16: bool, what: &str) -> PyResult<Self> {
        let dtype = obj
            .getattr("dtype")
            .and_then(|d| d.str().map(|s| s.to_string()))
            .unwrap_or_else(|_| type_name(obj));
        if bf16 {
            if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, u16>>() {
                return Ok(Self::Bf16U(a));
            }
            if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, i16>>() {
                return Ok(Self::Bf16I(a));
            }
            return Err(err(format!(
                "{what}: dtype=\"bf16\" takes the bfloat16 bits as a uint16 or int16 array, \
                 not {dtype}"
            )));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f32>>() {
            return Ok(Self::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'py, f16>>() {
            return Ok(Self::F16(a));
        }
        Err(err(format!(
            "{what} has dtype {dtype}; tquant takes float32, float16 or bfloat16 (a bfloat16 \
             torch.Tensor or ml_dtypes array, or its bits as uint16 with dtype=\"bf16\")"
        )))
    }

    pub(crate) fn shape(&self) -> Vec<usize> {
        match self {
            Self::F32(a) => a.shape().to_vec(),
            Self::F16(a) => a.shape().to_vec(),
            Self::Bf16U(a) => a.shape().to_vec(),
            Self::Bf16I(a) => a.shape().to_vec(),
        }
    }

    pub(crate) fn elem(&self) -> Elem {
        match self {
            Self::F32(_) => Elem::F32,
            Self::F16(_) => Elem::F16,
            Self::Bf16U(_) | Self::Bf16I(_) => Elem::Bf16,
        }
    }

    pub(crate) fn view(&self) -> View<'_> {
        match self {
            Self::F32(a) => View::F32(a.as_array()),
            Self::F16(a) => View::F16(a.as_array()),
            Self::Bf16U(a) => View::Bf16U(a.as_array()),
            Self::Bf16I(a) => View::Bf16I(a.as_array()),
        }
    }
}

impl View<'_> {
    /// The values in row-major order as f32: borrowed for C-ordered float32, else one copy.
    pub(crate) fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Self::F32(a) => match a.as_slice() {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(a.iter().copied().collect()),
            },
            Self::F16(a) => Cow::Owned(a.iter().map(|v| v.to_f32()).collect()),
            Self::Bf16U(a) => Cow::Owned(a.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()),
            Self::Bf16I(a) => Cow::Owned(
                a.iter()
                    .map(|&b| bf16::from_bits(b as u16).to_f32())
                    .collect(),
            ),
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}

/// Row-major `values` of `shape` as a new NumPy array (the vector becomes its buffer).
pub(crate) fn to_numpy<T: numpy::Element>(
    py: Python<'_>,
    values: Vec<T>,
    shape: &[usize],
) -> PyResult<Py<PyAny>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), values).map_err(err)?;
    Ok(a.into_pyarray(py).into_any().unbind())
}

/// f32 `values` rounded (to nearest, ties to even) to `elem`: float32, float16, or bfloat16 as
/// uint16 bits.
pub(crate) fn to_numpy_as(
    py: Python<'_>,
    values: Vec<f32>,
    shape: &[usize],
    elem: Elem,
) -> PyResult<Py<PyAny>> {
    match elem {
        Elem::F32 => to_numpy(py, values, shape),
        Elem::F16 => to_numpy(py, values.into_iter().map(f16::from_f32).collect(), shape),
        Elem::Bf16 => to_numpy(
            py,
            values
                .into_iter()
                .map(|v| bf16::from_f32(v).to_bits())
                .collect(),
            shape,
        ),
    }
}
