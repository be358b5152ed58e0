//! Functions over caller-owned buffers: the product of a quantized matrix given as its packed
//! parts, the dense f32 product, a format's table and the kernel path in use. (Before the C ABI
//! had its own library these were `tq_matmul`, `tq_matmul_f32`, `tq_format_table` and `tq_isa`
//! of `libtquant_kernels.a`; they keep their arguments and behaviour.)

use crate::error::{guarded, slice, slice_mut, string, Error, TQUANT_ERR_ARG, TQUANT_ERR_NULL};
use crate::matrix::{mode, scale_dtype};
use std::ffi::{c_char, c_int, CStr};
use tquant_formats::Format;
use tquant_kernels::{matmul, matmul_f32, Isa, QMatrix, QMatrixParts};

/// `y = x W^T` for a quantized `W` in tquant's layout given by its parts. See
/// `include/tquant.h`.
///
/// # Safety
/// Each pointer must be null with a zero length, or point at as many readable (for `y`,
/// writable) values as its length says, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn tquant_matmul_raw(
    rows: usize,
    cols: usize,
    block: usize,
    codes: *const u8,
    codes_len: usize,
    scales: *const u8,
    scales_len: usize,
    scale_dtype: c_int,
    table: *const f32,
    table_len: usize,
    x: *const f32,
    x_len: usize,
    n: usize,
    y: *mut f32,
    y_len: usize,
    mode: c_int,
) -> c_int {
    guarded(|| {
        let scale_dtype = self::scale_dtype(scale_dtype)?;
        let mode = self::mode(mode)?;
        // SAFETY: the caller's contract on every pointer and length.
        let (codes, scales, table, x, y) = unsafe {
            (
                slice(codes, codes_len, "codes")?,
                slice(scales, scales_len, "scales")?,
                slice(table, table_len, "table")?,
                slice(x, x_len, "x")?,
                slice_mut(y, y_len, "y")?,
            )
        };
        let q = QMatrix::from_parts(QMatrixParts {
            rows,
            cols,
            block,
            codes,
            scales,
            scale_dtype,
            table,
        })?;
        Ok(matmul(&q, x, n, y, mode)?)
    })
}

/// Dense `y = x W^T` for f32 `W` `[rows, cols]`. See `include/tquant.h`.
///
/// # Safety
/// As [`tquant_matmul_raw`].
#[no_mangle]
pub unsafe extern "C" fn tquant_matmul_f32(
    w: *const f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    x: *const f32,
    x_len: usize,
    n: usize,
    y: *mut f32,
    y_len: usize,
) -> c_int {
    guarded(|| {
        // SAFETY: the caller's contract on every pointer and length.
        let (w, x, y) = unsafe {
            (
                slice(w, w_len, "w")?,
                slice(x, x_len, "x")?,
                slice_mut(y, y_len, "y")?,
            )
        };
        Ok(matmul_f32(w, rows, cols, x, n, y)?)
    })
}

/// Copies the table of a named format (`"nf4"`, `"sf4:nu=3"`, ...) into `out` (room for 16)
/// and its length into `len`.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `out` must be NULL or have room for 16
/// floats; `len` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tquant_format_table(
    name: *const c_char,
    out: *mut f32,
    len: *mut usize,
) -> c_int {
    guarded(|| {
        if out.is_null() || len.is_null() {
            return Err(Error::new(
                TQUANT_ERR_NULL,
                if out.is_null() {
                    "out is NULL"
                } else {
                    "len is NULL"
                },
            ));
        }
        // SAFETY: the caller's contract on `name`.
        let name = unsafe { string(name, "name")? };
        let format: Format = name
            .parse()
            .map_err(|e| Error::new(TQUANT_ERR_ARG, format!("{e}")))?;
        let values = format.codebook().values();
        // SAFETY: `out` has room for 16 floats and a codebook has at most 16 values; `len` is
        // writable; both non-null (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), out, values.len().min(16));
            *len = values.len();
        }
        Ok(())
    })
}

/// The name of the kernel path in use on this CPU (a static string).
#[no_mangle]
pub extern "C" fn tquant_isa() -> *const c_char {
    let name: &'static CStr = match Isa::detect() {
        Isa::Reference => c"reference",
        Isa::Scalar => c"scalar",
        Isa::Avx2 => c"avx2",
        Isa::Avx512 => c"avx512",
    };
    name.as_ptr()
}
