//! Status codes, the thread-local last error message, the panic guard and the checked
//! conversions of C pointers that every exported function goes through.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tquant_convert::ConvertError;
use tquant_kernels::KernelError;

/// Success.
pub const TQUANT_OK: c_int = 0;
/// A required pointer was null (or a buffer pointer was null with a non-zero length).
pub const TQUANT_ERR_NULL: c_int = -1;
/// A buffer length does not match the shape.
pub const TQUANT_ERR_SIZE: c_int = -2;
/// A codebook table is empty, longer than 16 or not finite.
pub const TQUANT_ERR_TABLE: c_int = -3;
/// An invalid argument: unknown format, scale dtype or mode, a zero block, a shape that cannot
/// be quantized, NaN or infinite weights, an expert past the end, a string that is not UTF-8.
pub const TQUANT_ERR_ARG: c_int = -4;
/// A bug in tquant (a caught panic); outputs are unspecified.
pub const TQUANT_ERR_INTERNAL: c_int = -5;
/// A file cannot be read or is not a valid (quantized) checkpoint.
pub const TQUANT_ERR_FILE: c_int = -6;
/// The checkpoint has no tensor of that name.
pub const TQUANT_ERR_NOT_FOUND: c_int = -7;
/// The tensor exists but the kernels cannot multiply it (a dense tensor, or bitsandbytes'
/// flattened layout).
pub const TQUANT_ERR_UNSUPPORTED: c_int = -8;

/// A failure: its status code and message.
#[derive(Debug)]
pub(crate) struct Error {
    pub code: c_int,
    pub message: String,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(code: c_int, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn null(what: &str) -> Self {
        Self::new(TQUANT_ERR_NULL, format!("{what} is NULL"))
    }
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Self::new(kernel_status(&e), e.to_string())
    }
}

impl From<ConvertError> for Error {
    fn from(e: ConvertError) -> Self {
        let code = match &e {
            e if e.is_file() => TQUANT_ERR_FILE,
            ConvertError::NotFound { .. } => TQUANT_ERR_NOT_FOUND,
            ConvertError::Kernel { source, .. } => kernel_status(source),
            ConvertError::Invalid { .. }
            | ConvertError::NonFinite { .. }
            | ConvertError::Format { .. }
            | ConvertError::Mxfp4Rows { .. } => TQUANT_ERR_ARG,
            e if e.is_options() => TQUANT_ERR_ARG,
            _ => TQUANT_ERR_INTERNAL,
        };
        Self::new(code, e.to_string())
    }
}

fn kernel_status(e: &KernelError) -> c_int {
    match e {
        KernelError::CodesLength { .. }
        | KernelError::ScalesLength { .. }
        | KernelError::Length { .. }
        | KernelError::Overflow { .. } => TQUANT_ERR_SIZE,
        KernelError::TableSize(_) | KernelError::TableValue { .. } => TQUANT_ERR_TABLE,
        KernelError::ZeroBlock
        | KernelError::UnknownMode { .. }
        | KernelError::UnknownIsa { .. } => TQUANT_ERR_ARG,
        _ => TQUANT_ERR_INTERNAL,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message never holds NUL in practice; if one did, cut it there rather than lose it.
    let bytes = message.split('\0').next().unwrap_or_default();
    let c = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|m| *m.borrow_mut() = c);
}

/// The message of the last status-returning call on this thread: empty after a success. The
/// string stays valid until the next tquant call on this thread; never NULL.
#[no_mangle]
pub extern "C" fn tquant_last_error() -> *const c_char {
    LAST_ERROR.with(|m| m.borrow().as_ptr())
}

/// Runs `f`, records its message (or clears it) and returns its status; a panic becomes
/// [`TQUANT_ERR_INTERNAL`] instead of unwinding into C.
pub(crate) fn guarded(f: impl FnOnce() -> Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            TQUANT_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.code
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!("internal error (a bug in tquant): {what}"));
            TQUANT_ERR_INTERNAL
        }
    }
}

/// A slice from a C pointer and length; an error for a null pointer with a non-zero length.
///
/// # Safety
/// A non-null `p` must point at `len` readable values that stay valid and unchanged while the
/// slice lives.
pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-null, and the caller guarantees `len` readable values.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// As [`slice`], mutable.
///
/// # Safety
/// A non-null `p` must point at `len` writable values that nothing else accesses while the
/// slice lives.
pub(crate) unsafe fn slice_mut<'a, T>(p: *mut T, len: usize, what: &str) -> Result<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-null, and the caller guarantees `len` writable, unaliased values.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// A UTF-8 string from a C string.
///
/// # Safety
/// A non-null `p` must point at a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn string<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Error::new(TQUANT_ERR_ARG, format!("{what} is not UTF-8")))
}

/// Writes `value` through an out-pointer.
///
/// # Safety
/// A non-null `p` must be valid for a write of one `T`.
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T, what: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-null and writable by the caller's contract.
    unsafe { p.write(value) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: tquant_last_error returns a live NUL-terminated string.
        unsafe { CStr::from_ptr(tquant_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_is_a_status_and_a_message_not_an_unwind() {
        let status = guarded(|| panic!("the kernel fell over"));
        assert_eq!(status, TQUANT_ERR_INTERNAL);
        assert_eq!(
            last(),
            "internal error (a bug in tquant): the kernel fell over"
        );
        assert_eq!(guarded(|| Ok(())), TQUANT_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn messages_are_per_thread() {
        guarded(|| Err(Error::new(TQUANT_ERR_ARG, "here")));
        let other = std::thread::spawn(|| {
            guarded(|| Err(Error::new(TQUANT_ERR_SIZE, "there")));
            last()
        })
        .join()
        .unwrap();
        assert_eq!((last().as_str(), other.as_str()), ("here", "there"));
    }
}
