//! The one error type of the converter and the checkpoint reader.

use std::path::PathBuf;

/// Everything that can go wrong reading, converting or writing a checkpoint. Every variant
/// names the file and, where there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A safetensors header (or an index or config file) that does not describe a valid file.
    #[error("{path}: malformed header: {reason}")]
    Header { path: PathBuf, reason: String },
    /// A tensor entry of a header that is inconsistent (offsets, sizes, dtype, shape).
    #[error("{path}: tensor '{tensor}': {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// Weights that cannot be quantized because some values are NaN or infinite.
    #[error("{path}: tensor '{tensor}' has {count} NaN or infinite values (of {total}); refusing to quantize it")]
    NonFinite {
        path: PathBuf,
        tensor: String,
        count: usize,
        total: usize,
    },
    /// A tensor that is invalid for what was asked of it, outside any file.
    #[error("tensor '{tensor}': {reason}")]
    Invalid { tensor: String, reason: String },
    #[error("{path}: no tensor named '{tensor}'")]
    NotFound { path: PathBuf, tensor: String },
    /// A checkpoint directory without model.safetensors or an index.
    #[error("{path}: not a safetensors checkpoint: {reason}")]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error("{path}: output exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
    /// An existing output that `--force` may not replace: it holds `names`, which tquant did
    /// not write (or, with no names, it is a file of its own).
    #[error("{path}: {}; --force replaces only a previous tquant output: choose another output path or remove {}",
        foreign_list(.names), if .names.len() == 1 { "it" } else { "them" })]
    ForeignOutput { path: PathBuf, names: Vec<String> },
    /// Conversion options that do not make sense together.
    #[error("invalid options: {0}")]
    Options(String),
    /// Stored parts the kernels cannot multiply (sizes that do not match the shape).
    #[error("tensor '{tensor}': {err}")]
    Kernel {
        tensor: String,
        err: tquant_kernels::KernelError,
    },
    #[error("tensor '{tensor}': {err}")]
    Format {
        tensor: String,
        err: tquant_formats::FormatError,
    },
}

impl ConvertError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            err,
        }
    }

    pub(crate) fn header(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Header {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }
}

fn foreign_list(names: &[String]) -> String {
    if names.is_empty() {
        return "a file not written by tquant (its outputs are directories)".into();
    }
    const SHOWN: usize = 8;
    let mut list = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    format!("holds files not written by tquant ({list})")
}
