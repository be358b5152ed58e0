//! Text in and out of tquant's models: Hugging Face `tokenizer.json` tokenizers (encode, decode,
//! the BOS/EOS a checkpoint's tokenizer config adds), a decoder that streams complete UTF-8 text
//! token by token, chat templates rendered with a Jinja engine as transformers'
//! `apply_chat_template` does, and [`Vocabulary`], which gives byte-vocabulary models (each byte
//! one token) and tokenized models one interface.

mod chat;
mod conversation;
mod stream;
mod tokenizer;
mod vocabulary;

pub use chat::{ChatTemplate, Message};
pub use conversation::Conversation;
pub use stream::StreamDecoder;
pub use tokenizer::{Encoded, Tokenizer};
pub use vocabulary::Vocabulary;

use std::path::PathBuf;

/// What can go wrong reading a tokenizer or a template, or turning text into ids and back.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("{}: {msg}", dir.display())]
    Unsupported { dir: PathBuf, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

pub type Result<T, E = TextError> = std::result::Result<T, E>;
