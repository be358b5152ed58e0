//! `tquant_checkpoint`: a quantized checkpoint directory (what `tquant convert` writes), opened
//! memory-mapped; its tensors become `tquant_matrix` values without copying.

use crate::error::{
    guarded, string, write_out, Error, Result, TQUANT_ERR_ARG, TQUANT_ERR_UNSUPPORTED,
};
use crate::matrix::Matrix;
use std::ffi::{c_char, c_int};
use std::sync::Arc;
use tquant_convert::{Checkpoint, Layout, Weight};

/// The opaque `tquant_checkpoint` of the C API.
#[derive(Debug)]
pub struct CheckpointHandle(Arc<Checkpoint>);

/// Opens the checkpoint at `path` (a directory with `model.safetensors` or an index, or one
/// `.safetensors` file); `*out` receives it. Every header is validated here.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tquant_checkpoint_open(
    path: *const c_char,
    out: *mut *mut CheckpointHandle,
) -> c_int {
    guarded(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        // SAFETY: the caller's contract on `path`.
        let path = unsafe { string(path, "path")? };
        let c = Checkpoint::open(path)?;
        let h = Box::into_raw(Box::new(CheckpointHandle(Arc::new(c))));
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { write_out(out, h, "out") }
    })
}

fn matrix(c: &Arc<Checkpoint>, name: &str, expert: usize) -> Result<Matrix> {
    let view = match c.get(name)? {
        Weight::Quantized(v) => v,
        Weight::Dense(_) => {
            return Err(Error::new(
                TQUANT_ERR_UNSUPPORTED,
                format!("{}: tensor '{name}' is not quantized", c.root().display()),
            ))
        }
    };
    if view.info.layout == Layout::Bnb {
        return Err(Error::new(
            TQUANT_ERR_UNSUPPORTED,
            format!(
                "{}: tensor '{name}' is in bitsandbytes' flattened layout, which the kernels do not read",
                c.root().display()
            ),
        ));
    }
    if view.info.is_q8_0() {
        return Err(Error::new(
            TQUANT_ERR_UNSUPPORTED,
            format!(
                "{}: tensor '{name}' is q8_0 (the converter's default for embeddings and \
                 lm_head), which the C API does not multiply; convert with keep-as source",
                c.root().display()
            ),
        ));
    }
    if expert >= view.experts() {
        return Err(Error::new(
            TQUANT_ERR_ARG,
            format!(
                "{}: tensor '{name}' has {} matrices; expert {expert} asked for",
                c.root().display(),
                view.experts()
            ),
        ));
    }
    let format = view.format(expert).to_string();
    Matrix::mapped(c.clone(), name, expert, &format)
}

/// Matrix `expert` (0 for a 2-D tensor) of the quantized tensor `name` (`"model.layers.0.mlp.
/// down_proj.weight"`); `*out` receives it. It stays usable after the checkpoint is freed.
///
/// # Safety
/// `c` must be NULL or a live checkpoint of this library; `name` NULL or a NUL-terminated
/// string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tquant_checkpoint_matrix(
    c: *const CheckpointHandle,
    name: *const c_char,
    expert: usize,
    out: *mut *mut Matrix,
) -> c_int {
    guarded(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        // SAFETY: NULL or a live checkpoint by the caller's contract.
        let c = unsafe { c.as_ref() }.ok_or_else(|| Error::null("checkpoint"))?;
        // SAFETY: the caller's contract on `name`.
        let name = unsafe { string(name, "name")? };
        let m = matrix(&c.0, name, expert)?;
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { write_out(out, Box::into_raw(Box::new(m)), "out") }
    })
}

/// Releases a checkpoint (NULL is allowed); matrices taken from it stay valid.
///
/// # Safety
/// `c` must be NULL or a checkpoint of this library not yet freed; it must not be used
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn tquant_checkpoint_free(c: *mut CheckpointHandle) {
    if c.is_null() {
        return;
    }
    // SAFETY: made by Box::into_raw in this crate and not freed before, by the caller's contract.
    let c = unsafe { Box::from_raw(c) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(c)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's default stores an embedding as q8_0, which the C API refuses by name.
    #[test]
    fn a_q8_0_tensor_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("float");
        std::fs::create_dir_all(&input).unwrap();
        let bytes: Vec<u8> = (0..32 * 64)
            .flat_map(|i| ((i % 7) as f32 * 0.01).to_le_bytes())
            .collect();
        let name = "model.embed_tokens.weight";
        let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![32, 64], &bytes)
            .unwrap();
        safetensors::serialize_to_file(vec![(name, v)], None, &input.join("model.safetensors"))
            .unwrap();
        let out = dir.path().join("q");
        let run = tquant_convert::RunOptions::default();
        let opts = tquant_convert::ConvertOptions::default();
        tquant_convert::convert(&input, &out, &opts, &run, &tquant_convert::NoProgress).unwrap();
        let c = Arc::new(Checkpoint::open(&out).unwrap());
        assert!(c.quant_info(name).unwrap().is_q8_0());
        let Err(err) = matrix(&c, name, 0) else {
            panic!("a q8_0 tensor became a matrix")
        };
        assert_eq!(err.code, TQUANT_ERR_UNSUPPORTED);
        assert!(err.message.contains(name) && err.message.contains("q8_0"));
    }
}
