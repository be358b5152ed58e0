//! Text in and out of tquant's models: Hugging Face `tokenizer.json` tokenizers (encode, decode,
//! the BOS/EOS a checkpoint's tokenizer config adds), a decoder that streams complete UTF-8 text
//! token by token, chat templates rendered with a Jinja engine as transformers'
//! `apply_chat_template` does, and [`Vocabulary`], which gives byte-vocabulary models (each byte
//! one token) and tokenized models one interface.
//!
//! ```
//! use tquant_text::Vocabulary;
//! // A byte vocabulary: each UTF-8 byte is one id, so `é` takes two.
//! let vocab = Vocabulary::Bytes;
//! let ids = vocab.encode("héllo", false)?;
//! assert_eq!(ids.len(), 6);
//! // Streaming hands out whole characters only: nothing after the first byte of `é`.
//! let mut stream = vocab.stream();
//! let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id)).collect::<Result<_, _>>()?;
//! assert_eq!(pieces, ["h", "", "é", "l", "l", "o"]);
//! assert_eq!(stream.flush()?, "");
//! # Ok::<(), tquant_text::TextError>(())
//! ```
#![warn(missing_docs)]

mod chat;
mod conversation;
mod stream;
mod tokenized;
mod tokenizer;
mod vocabulary;

pub use chat::{ChatTemplate, Message};
pub use conversation::{Conversation, UserTurns};
pub use stream::StreamDecoder;
pub use tokenized::Tokenized;
pub use tokenizer::{Encoded, Tokenizer};
pub use vocabulary::Vocabulary;

use std::path::PathBuf;

/// What can go wrong reading a tokenizer or a template, or turning text into ids and back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// A file or directory that cannot be read.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        err: std::io::Error,
    },
    /// A tokenizer or config file whose content is wrong.
    #[error("{}: {msg}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A model directory without a tokenizer tquant reads.
    #[error("{}: {msg}", dir.display())]
    Unsupported {
        /// The model directory.
        dir: PathBuf,
        /// What is missing.
        msg: String,
    },
    /// The tokenizer failed to encode or decode.
    #[error("tokenizer: {err}")]
    Tokenizer {
        /// The `tokenizers` crate's error.
        err: tokenizers::Error,
    },
    /// A chat template that does not compile or render.
    #[error("chat template: {}", chat::describe(err))]
    Template {
        /// The template engine's error (its causes are in the message).
        err: minijinja::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = TextError> = std::result::Result<T, E>;
