//! What can go wrong writing a GGUF file.

use std::path::PathBuf;

/// An error of the GGUF export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Reading the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::ConvertError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The output exists and replacing it was not asked for.
    #[error("{} exists (replace it with force)", path.display())]
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// The output names a directory; a GGUF model is one file.
    #[error("{} is a directory; the gguf layout writes one file (name it, e.g. model.gguf)", path.display())]
    OutputIsDir {
        /// The output.
        path: PathBuf,
    },
    /// The checkpoint has no `tokenizer.json`, which llama.cpp needs in the file.
    #[error(
        "{} not found: llama.cpp reads the tokenizer from the GGUF file; put the model's \
         tokenizer.json (and tokenizer_config.json) beside its weights, or name another \
         directory holding them as the tokenizer",
        path.display()
    )]
    NoTokenizer {
        /// The missing file.
        path: PathBuf,
    },
    /// The tokenizer cannot be exported as llama.cpp reads it.
    #[error("{}: {reason}", path.display())]
    Tokenizer {
        /// `tokenizer.json` or `tokenizer_config.json`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `config.json` lacks a setting or has one llama.cpp's deepseek2 cannot run.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is missing, misshapen or cannot be stored in the asked type.
    #[error("{}: tensor {tensor}: {reason}", path.display())]
    Tensor {
        /// The checkpoint.
        path: PathBuf,
        /// The checkpoint's tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's data did not match its declared size (a bug, reported rather than written).
    #[error("tensor {tensor}: {reason}")]
    Internal {
        /// GGUF tensor name.
        tensor: String,
        /// What went wrong.
        reason: String,
    },
    /// An unknown GGUF type name.
    #[error("unknown gguf type '{0}' (q4_0, iq4_nl, optionally +search)")]
    UnknownType(String),
}
