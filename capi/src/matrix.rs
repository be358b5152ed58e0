//! `tquant_matrix`: a quantized matrix owned by the library, made by quantizing f32 weights
//! ([`tquant_quantize`]) or taken from a checkpoint (`tquant_checkpoint_matrix`), multiplied by
//! [`tquant_matmul`] and released by [`tquant_matrix_free`].

use crate::error::{
    guarded, slice, slice_mut, string, write_out, Error, Result, TQUANT_ERR_ARG, TQUANT_ERR_FILE,
    TQUANT_ERR_INTERNAL, TQUANT_ERR_SIZE,
};
use rayon::ThreadPool;
use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, Mutex};
use tquant_convert::{
    quantize_tensor, Checkpoint, ConvertOptions, Dtype, Layout, Policy, QuantizedTensor,
    QuantizedView,
};
use tquant_kernels::{matmul, Mode, QMatrix, ScaleDtype};

/// Most threads [`tquant_matmul`] starts for one call.
pub const MAX_THREADS: usize = 1024;

/// The opaque `tquant_matrix` of the C API.
#[derive(Debug)]
pub struct Matrix {
    storage: Storage,
    /// The exact codebook name (`sf4:nu=4.237`), for `tquant_matrix_format`.
    format: CString,
    rows: usize,
    cols: usize,
}

#[derive(Debug)]
enum Storage {
    /// Quantized by this library; owns its bytes.
    Owned(Box<QuantizedTensor>),
    /// Matrix `expert` of a tensor of a memory-mapped checkpoint, which it keeps open.
    Mapped {
        checkpoint: Arc<Checkpoint>,
        name: String,
        expert: usize,
    },
}

impl Matrix {
    /// A matrix of `checkpoint`'s tensor `name`; the caller has checked that it is quantized in
    /// a layout the kernels read and that `expert` exists.
    pub(crate) fn mapped(
        checkpoint: Arc<Checkpoint>,
        name: &str,
        expert: usize,
        format: &str,
    ) -> Result<Self> {
        let (rows, cols) = {
            let q = checkpoint.quantized_parts(name)?.qmatrix(expert)?;
            (q.rows(), q.cols())
        };
        Ok(Self {
            format: c_string(format)?,
            storage: Storage::Mapped {
                checkpoint,
                name: name.to_string(),
                expert,
            },
            rows,
            cols,
        })
    }

    /// The tensor's view and which of its matrices this is.
    fn view(&self) -> Result<(QuantizedView<'_>, usize)> {
        match &self.storage {
            Storage::Owned(t) => Ok((t.view(), 0)),
            Storage::Mapped {
                checkpoint,
                name,
                expert,
            } => Ok((checkpoint.quantized_parts(name)?, *expert)),
        }
    }

    /// The kernels' view (checked again: cheap next to a product, and it keeps no borrow).
    pub(crate) fn qmatrix(&self) -> Result<QMatrix<'_>> {
        let (view, e) = self.view()?;
        Ok(view.qmatrix(e)?)
    }
}

fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::new(TQUANT_ERR_FILE, format!("name '{s}' holds a NUL")))
}

pub(crate) fn scale_dtype(code: c_int) -> Result<ScaleDtype> {
    usize::try_from(code)
        .ok()
        .and_then(|i| ScaleDtype::ALL.get(i).copied())
        .ok_or_else(|| Error::new(TQUANT_ERR_ARG, format!("unknown scale dtype {code}")))
}

pub(crate) fn mode(code: c_int) -> Result<Mode> {
    match code {
        0 => Ok(Mode::Exact),
        1 => Ok(Mode::Fast),
        _ => Err(Error::new(
            TQUANT_ERR_ARG,
            format!("unknown mode {code} (TQUANT_MODE_EXACT 0, TQUANT_MODE_FAST 1)"),
        )),
    }
}

/// Quantizes the row-major f32 matrix `w` `[rows, cols]` (`w_len = rows * cols`) to `format`
/// with blocks of `block` elements (0: one block per row) and `scale_dtype` scales; `*out`
/// receives the new matrix. See `include/tquant.h`.
///
/// # Safety
/// `w` must point at `w_len` readable floats; `format` must be NULL or a NUL-terminated
/// string; `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tquant_quantize(
    w: *const f32,
    w_len: usize,
    rows: usize,
    cols: usize,
    format: *const c_char,
    block: usize,
    scale_dtype: c_int,
    out: *mut *mut Matrix,
) -> c_int {
    guarded(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        // SAFETY: the caller's contract on `format` and `w`.
        let (format, w) = unsafe { (string(format, "format")?, slice(w, w_len, "w")?) };
        let dtype = self::scale_dtype(scale_dtype)?;
        if rows.checked_mul(cols) != Some(w_len) {
            return Err(Error::new(
                TQUANT_ERR_SIZE,
                format!("w has {w_len} values, a [{rows}, {cols}] matrix needs rows * cols"),
            ));
        }
        let block = if block == 0 {
            "row".to_string()
        } else {
            block.to_string()
        };
        let opts = ConvertOptions::from_args(
            Some(format),
            None,
            Some(&block),
            Some(dtype.name()),
            Layout::Tquant,
            Policy::default(),
        )?;
        let t = quantize_tensor("matrix", w, &[rows, cols], Dtype::F32, &opts)?;
        let m = Matrix {
            format: c_string(t.view().format(0))?,
            storage: Storage::Owned(Box::new(t)),
            rows,
            cols,
        };
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { write_out(out, Box::into_raw(Box::new(m)), "out") }
    })
}

/// Pools kept for reuse; a caller that varies the count does not accumulate threads.
const KEPT_POOLS: usize = 4;

/// A rayon pool of `threads` threads, kept for the next calls (the last [`KEPT_POOLS`] made).
fn pool(threads: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(t, _)| *t == threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| {
            Error::new(
                TQUANT_ERR_INTERNAL,
                format!("starting {threads} threads: {e}"),
            )
        })?;
    let p = Arc::new(p);
    if pools.len() == KEPT_POOLS {
        // Its threads end once no call holds it.
        pools.remove(0);
    }
    pools.push((threads, p.clone()));
    Ok(p)
}

/// `y = x W^T` for the matrix `m` (`W` `[rows, cols]`): `x` is `[n, cols]`, `y` `[n, rows]`,
/// row-major. `mode` is `TQUANT_MODE_EXACT` or `TQUANT_MODE_FAST`; `threads` 0 uses rayon's
/// global pool (all cores, or `RAYON_NUM_THREADS`), otherwise that many threads.
///
/// # Safety
/// `m` must be NULL or a live matrix of this library; `x` and `y` must point at `x_len`
/// readable and `y_len` writable floats that do not overlap.
#[no_mangle]
pub unsafe extern "C" fn tquant_matmul(
    m: *const Matrix,
    x: *const f32,
    x_len: usize,
    n: usize,
    y: *mut f32,
    y_len: usize,
    mode: c_int,
    threads: usize,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or a live matrix by the caller's contract.
        let m = unsafe { m.as_ref() }.ok_or_else(|| Error::null("matrix"))?;
        // SAFETY: the caller's contract on `x` and `y`.
        let (x, y) = unsafe { (slice(x, x_len, "x")?, slice_mut(y, y_len, "y")?) };
        let mode = self::mode(mode)?;
        if threads > MAX_THREADS {
            return Err(Error::new(
                TQUANT_ERR_ARG,
                format!("{threads} threads asked for; at most {MAX_THREADS}"),
            ));
        }
        let q = m.qmatrix()?;
        if threads == 0 {
            matmul(&q, x, n, y, mode)?;
        } else {
            pool(threads)?.install(|| matmul(&q, x, n, y, mode))?;
        }
        Ok(())
    })
}

/// Writes the matrix's shape.
///
/// # Safety
/// `m` must be NULL or a live matrix; `rows` and `cols` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tquant_matrix_shape(
    m: *const Matrix,
    rows: *mut usize,
    cols: *mut usize,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or a live matrix by the caller's contract.
        let m = unsafe { m.as_ref() }.ok_or_else(|| Error::null("matrix"))?;
        if rows.is_null() || cols.is_null() {
            return Err(Error::null(if rows.is_null() { "rows" } else { "cols" }));
        }
        // SAFETY: both non-null and writable by the caller's contract.
        unsafe {
            write_out(rows, m.rows, "rows")?;
            write_out(cols, m.cols, "cols")
        }
    })
}

/// The exact format of the matrix's codebook (`"nf4"`, `"sf4:nu=4.237"`), valid while `m`
/// lives; NULL for a NULL `m`.
///
/// # Safety
/// `m` must be NULL or a live matrix.
#[no_mangle]
pub unsafe extern "C" fn tquant_matrix_format(m: *const Matrix) -> *const c_char {
    // SAFETY: NULL or a live matrix by the caller's contract.
    match unsafe { m.as_ref() } {
        Some(m) => m.format.as_ptr(),
        None => std::ptr::null(),
    }
}

/// Decodes the matrix into row-major f32 `out` (`out_len = rows * cols`): the weights every
/// product uses.
///
/// # Safety
/// `m` must be NULL or a live matrix; `out` must point at `out_len` writable floats.
#[no_mangle]
pub unsafe extern "C" fn tquant_matrix_dequantize(
    m: *const Matrix,
    out: *mut f32,
    out_len: usize,
) -> c_int {
    guarded(|| {
        // SAFETY: NULL or a live matrix by the caller's contract.
        let m = unsafe { m.as_ref() }.ok_or_else(|| Error::null("matrix"))?;
        // SAFETY: the caller's contract on `out`.
        let out = unsafe { slice_mut(out, out_len, "out")? };
        if out.len() != m.rows * m.cols {
            return Err(Error::new(
                TQUANT_ERR_SIZE,
                format!(
                    "out has {} floats, the [{}, {}] matrix needs {}",
                    out.len(),
                    m.rows,
                    m.cols,
                    m.rows * m.cols
                ),
            ));
        }
        let (view, e) = m.view()?;
        let values = view
            .dequantize_matrix(e)
            .map_err(|err| Error::new(TQUANT_ERR_FILE, err.to_string()))?;
        out.copy_from_slice(&values);
        Ok(())
    })
}

/// Releases a matrix (NULL is allowed). A matrix from a checkpoint keeps the checkpoint's files
/// mapped until it is freed.
///
/// # Safety
/// `m` must be NULL or a matrix of this library not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn tquant_matrix_free(m: *mut Matrix) {
    if m.is_null() {
        return;
    }
    // SAFETY: made by Box::into_raw in this crate and not freed before, by the caller's contract.
    let m = unsafe { Box::from_raw(m) };
    // Dropping unmaps files; a panic there must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(m)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_have_the_asked_threads_and_are_reused_a_few_at_a_time() {
        let three = pool(3).unwrap();
        assert_eq!(three.current_num_threads(), 3);
        assert!(Arc::ptr_eq(&three, &pool(3).unwrap()));
        for t in 4..=9 {
            assert_eq!(pool(t).unwrap().current_num_threads(), t);
        }
        // 3 was made before the last four: a new pool, with the same count.
        let again = pool(3).unwrap();
        assert!(!Arc::ptr_eq(&three, &again));
        assert_eq!(again.current_num_threads(), 3);
    }
}
