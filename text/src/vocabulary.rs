//! What a model's token ids mean: a tokenizer's tokens, or bytes (vocabulary of 256, each byte
//! one token). The CLI encodes, decodes and streams through this one type for both.

use crate::tokenizer::{Encoded, Tokenizer};
use crate::{Result, TextError};
use std::path::Path;

/// The meaning of a model's ids.
#[derive(Debug, Clone)]
pub enum Vocabulary {
    /// A `tokenizer.json` beside the model.
    Tokenizer(Box<Tokenizer>),
    /// No tokenizer and 256 ids: id = byte value.
    Bytes,
}

/// Tokenizer files of other kinds, which tquant does not read.
const OTHER_TOKENIZERS: [&str; 3] = ["tiktoken.model", "tokenizer.model", "vocab.json"];

impl Vocabulary {
    /// The vocabulary of the model in `dir`, whose embedding has `model_vocab` rows (`None` when
    /// only a tokenizer is asked for, e.g. by `tquant tokenize`).
    pub fn open(dir: &Path, model_vocab: Option<usize>) -> Result<Self> {
        if dir.join("tokenizer.json").is_file() {
            let t = Tokenizer::from_dir(dir)?;
            if let Some(n) = model_vocab {
                if t.vocab_size() > n {
                    return Err(TextError::Unsupported {
                        dir: dir.into(),
                        msg: format!(
                            "tokenizer.json has {} tokens but the model only {n}",
                            t.vocab_size()
                        ),
                    });
                }
            }
            return Ok(Self::Tokenizer(Box::new(t)));
        }
        if model_vocab == Some(256) {
            return Ok(Self::Bytes);
        }
        if !dir.is_dir() {
            return Err(TextError::Io {
                path: dir.into(),
                err: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let other = OTHER_TOKENIZERS.iter().find(|f| dir.join(f).is_file());
        let size = model_vocab.map_or(String::new(), |n| format!(" for a vocabulary of {n}"));
        let msg = match other {
            Some(f) => format!(
                "{f} is not supported: text needs tokenizer.json (a Hugging Face tokenizer){size}"
            ),
            None => format!("no tokenizer.json: text needs a Hugging Face tokenizer{size}"),
        };
        Err(TextError::Unsupported {
            dir: dir.into(),
            msg,
        })
    }

    /// The ids of `text`; `add_special` adds what the tokenizer config adds (nothing for bytes).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match self {
            Self::Tokenizer(t) => t.encode(text, add_special),
            Self::Bytes => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    /// The ids of `text` and where each token ends in it, in bytes.
    pub fn encode_with_ends(&self, text: &str, add_special: bool) -> Result<Encoded> {
        match self {
            Self::Tokenizer(t) => t.encode_with_ends(text, add_special),
            Self::Bytes => Ok(Encoded {
                ids: text.bytes().map(u32::from).collect(),
                ends: (1..=text.len()).collect(),
            }),
        }
    }

    /// The text of `ids`; byte sequences that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_lossy(ids)
    }

    pub(crate) fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        match self {
            Self::Tokenizer(t) => t.decode(ids),
            Self::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// BOS when the tokenizer config adds it to a prompt.
    pub fn prompt_bos(&self) -> Option<u32> {
        match self {
            Self::Tokenizer(t) => t.bos_id().filter(|_| t.adds_bos()),
            Self::Bytes => None,
        }
    }

    /// Ids that end a generation (none for bytes).
    pub fn eos_ids(&self) -> &[u32] {
        match self {
            Self::Tokenizer(t) => t.eos_ids(),
            Self::Bytes => &[],
        }
    }

    /// The tokenizer, for a tokenized model.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            Self::Tokenizer(t) => Some(t),
            Self::Bytes => None,
        }
    }
}
