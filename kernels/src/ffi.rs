//! The C ABI, declared in `include/tquant.h`. Every function checks its sizes, returns a status
//! code (0 or a negative `TQ_ERR_*`) and never unwinds into C.

use crate::{matmul, matmul_f32, Isa, KernelError, Mode, QMatrix, ScaleDtype};
use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tquant_formats::Format;

pub const TQ_OK: c_int = 0;
/// A pointer was null while its length was not zero.
pub const TQ_ERR_NULL: c_int = -1;
/// A buffer length does not match the shape.
pub const TQ_ERR_SIZE: c_int = -2;
/// The codebook table is empty, longer than 16 or not finite.
pub const TQ_ERR_TABLE: c_int = -3;
/// An unknown enum value (scale dtype, mode) or format name, or a zero block.
pub const TQ_ERR_ARG: c_int = -4;
/// An internal error (a bug); the output is unspecified.
pub const TQ_ERR_INTERNAL: c_int = -5;

fn status(e: &KernelError) -> c_int {
    match e {
        KernelError::CodesLength { .. }
        | KernelError::ScalesLength { .. }
        | KernelError::Length { .. }
        | KernelError::Overflow { .. } => TQ_ERR_SIZE,
        KernelError::TableSize(_) | KernelError::TableValue { .. } => TQ_ERR_TABLE,
        KernelError::ZeroBlock | KernelError::Parse(_) => TQ_ERR_ARG,
        KernelError::Unavailable { .. } => TQ_ERR_INTERNAL,
    }
}

/// A slice from a C pointer and length; `None` for a null pointer with a non-zero length.
///
/// Safety: a non-null `p` must point at `len` readable values that stay valid and unchanged
/// while the slice lives.
unsafe fn slice<'a, T>(p: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        return Some(&[]);
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and the caller guarantees `len` readable values.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// As [`slice`], mutable. Safety: a non-null `p` must point at `len` writable values that
/// nothing else accesses while the slice lives.
unsafe fn slice_mut<'a, T>(p: *mut T, len: usize) -> Option<&'a mut [T]> {
    if len == 0 {
        return Some(&mut []);
    }
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, and the caller guarantees `len` writable, unaliased values.
    Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

fn guarded(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(TQ_ERR_INTERNAL)
}

/// `y = x W^T` for a quantized `W` in tquant's layout. See `include/tquant.h`.
///
/// # Safety
/// Each pointer must be null with a zero length, or point at as many readable (for `y`,
/// writable) values as its length says, valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn tq_matmul(
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
        let Some(dtype) = ScaleDtype::ALL
            .get(scale_dtype as usize)
            .filter(|_| scale_dtype >= 0)
        else {
            return TQ_ERR_ARG;
        };
        let mode = match mode {
            0 => Mode::Exact,
            1 => Mode::Fast,
            _ => return TQ_ERR_ARG,
        };
        // SAFETY: the caller's contract on every pointer and length.
        let (codes, scales, table, x, y) = unsafe {
            (
                slice(codes, codes_len),
                slice(scales, scales_len),
                slice(table, table_len),
                slice(x, x_len),
                slice_mut(y, y_len),
            )
        };
        let (Some(codes), Some(scales), Some(table), Some(x), Some(y)) =
            (codes, scales, table, x, y)
        else {
            return TQ_ERR_NULL;
        };
        let q = match QMatrix::new(rows, cols, block, codes, scales, *dtype, table) {
            Ok(q) => q,
            Err(e) => return status(&e),
        };
        match matmul(&q, x, n, y, mode) {
            Ok(()) => TQ_OK,
            Err(e) => status(&e),
        }
    })
}

/// Dense `y = x W^T` for f32 `W` `[rows, cols]`. See `include/tquant.h`.
///
/// # Safety
/// As [`tq_matmul`].
#[no_mangle]
pub unsafe extern "C" fn tq_matmul_f32(
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
        let (w, x, y) = unsafe { (slice(w, w_len), slice(x, x_len), slice_mut(y, y_len)) };
        let (Some(w), Some(x), Some(y)) = (w, x, y) else {
            return TQ_ERR_NULL;
        };
        match matmul_f32(w, rows, cols, x, n, y) {
            Ok(()) => TQ_OK,
            Err(e) => status(&e),
        }
    })
}

/// Copies the table of a named format (`"nf4"`, `"sf4:nu=3"`, ...) into `out` (room for 16)
/// and its length into `len`.
///
/// # Safety
/// `name` must be a NUL-terminated string; `out` must have room for 16 floats; `len` must be
/// writable.
#[no_mangle]
pub unsafe extern "C" fn tq_format_table(
    name: *const c_char,
    out: *mut f32,
    len: *mut usize,
) -> c_int {
    guarded(|| {
        if name.is_null() || out.is_null() || len.is_null() {
            return TQ_ERR_NULL;
        }
        // SAFETY: a NUL-terminated string by the caller's contract.
        let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
            return TQ_ERR_ARG;
        };
        let Ok(format) = name.parse::<Format>() else {
            return TQ_ERR_ARG;
        };
        let values = format.codebook().values();
        // SAFETY: `out` has room for 16 floats and a codebook has at most 16 values; `len` is
        // writable.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), out, values.len().min(16));
            *len = values.len();
        }
        TQ_OK
    })
}

/// The name of the path `tq_matmul` uses on this CPU (a static string).
#[no_mangle]
pub extern "C" fn tq_isa() -> *const c_char {
    let name: &'static CStr = match Isa::detect() {
        Isa::Reference => c"reference",
        Isa::Scalar => c"scalar",
        Isa::Avx2 => c"avx2",
        Isa::Avx512 => c"avx512",
    };
    name.as_ptr()
}
