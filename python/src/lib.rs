//! The native part of the `tquant` Python package (`tquant._native`): thin wrappers over the
//! library crates. Quantization is `tquant_convert::quantize_tensor`, products are
//! `tquant_kernels::matmul`, conversion `tquant_convert::convert` (with calibration through
//! `tquant_report::pipeline`), reports `tquant_report::Report`; nothing is computed here.
//!
//! Inputs arrive as NumPy arrays (the pure-Python part turns PyTorch tensors, DLPack and buffer
//! objects into arrays without copying where it can); bf16 arrives as its uint16 bits with a flag.
//! Every library error becomes `tquant.TquantError` with the library's message, and the GIL is
//! released while the library works.

mod array;
mod checkpoint;
mod jobs;
mod matrix;

use pyo3::prelude::*;

pyo3::create_exception!(
    tquant,
    TquantError,
    pyo3::exceptions::PyValueError,
    "An error of the tquant library (bad format name, bad shape or dtype, unreadable file, ...), \
     with the library's message."
);

/// The error as a `TquantError` with its message.
pub(crate) fn err(e: impl std::fmt::Display) -> PyErr {
    TquantError::new_err(e.to_string())
}

/// The format catalog as `(name, bits, values, source)` tuples, values in code order.
#[pyfunction]
fn formats() -> Vec<(String, u32, Vec<f32>, String)> {
    tquant_formats::Format::all()
        .iter()
        .map(|f| {
            (
                f.name().to_string(),
                f.bits(),
                f.codebook().values().to_vec(),
                f.source().to_string(),
            )
        })
        .collect()
}

/// The instruction-set path the kernels run on this CPU (`avx512`, `avx2`, `scalar`).
#[pyfunction]
fn kernel_isa() -> String {
    tquant_kernels::Isa::detect().to_string()
}

/// The extension module `tquant._native`.
#[pymodule(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TquantError", m.py().get_type::<TquantError>())?;
    m.add_function(wrap_pyfunction!(formats, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_isa, m)?)?;
    m.add_function(wrap_pyfunction!(matrix::quantize, m)?)?;
    m.add_function(wrap_pyfunction!(matrix::fake_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(matrix::matmul, m)?)?;
    m.add_function(wrap_pyfunction!(checkpoint::open, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::convert, m)?)?;
    m.add_function(wrap_pyfunction!(jobs::report, m)?)?;
    m.add_class::<matrix::QuantizedMatrix>()?;
    m.add_class::<checkpoint::Checkpoint>()?;
    Ok(())
}
