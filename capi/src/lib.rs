//! The C ABI of tquant, declared in `include/tquant.h`: `cargo build --release -p tquant-capi`
//! builds `libtquant_capi.so` and `libtquant_capi.a` in `target/release/`.
//!
//! - [`matrix`]: quantize a row-major f32 matrix to any catalog format into an opaque
//!   `tquant_matrix`, multiply it (GEMV/GEMM, exact or fast, on a chosen number of threads),
//!   dequantize, free.
//! - [`checkpoint`]: open a quantized checkpoint directory and take a named tensor as a
//!   `tquant_matrix` (memory-mapped, nothing copied).
//! - [`raw`]: the product over caller-owned packed buffers, the dense f32 product, a format's
//!   table and the kernel path in use.
//!
//! Every function that can fail returns [`TQUANT_OK`] or a negative `TQUANT_ERR_*` status and
//! records a message that [`tquant_last_error`] returns on the same thread. No panic crosses the
//! boundary: one is caught and reported as [`TQUANT_ERR_INTERNAL`].
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod checkpoint;
mod error;
pub mod matrix;
pub mod raw;

pub use error::{
    tquant_last_error, TQUANT_ERR_ARG, TQUANT_ERR_FILE, TQUANT_ERR_INTERNAL, TQUANT_ERR_NOT_FOUND,
    TQUANT_ERR_NULL, TQUANT_ERR_SIZE, TQUANT_ERR_TABLE, TQUANT_ERR_UNSUPPORTED, TQUANT_OK,
};

use std::ffi::{c_char, CStr};

/// The library's version, `"MAJOR.MINOR.PATCH"` (equal to `TQUANT_VERSION` in the header it
/// was built with), a static string.
#[no_mangle]
pub extern "C" fn tquant_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the package version has no NUL"),
        };
    VERSION.as_ptr()
}

// Matrices and checkpoints may be shared between C threads (the header says so).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<matrix::Matrix>();
    shareable::<checkpoint::CheckpointHandle>();
};
