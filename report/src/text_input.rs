//! Text files turned into a model's token ids, for `eval`, `report` and `--calibrate`: byte by
//! byte for byte-vocabulary models, through `tokenizer.json` otherwise.

use crate::{ReportError, Result};
use std::path::Path;
use tquant_model::eval::{scored_bytes, Score};
use tquant_text::Vocabulary;

/// A text as token ids with, for each, the byte offset where it ends in the text.
#[derive(Debug)]
pub struct TokenizedText {
    /// The token ids.
    pub ids: Vec<u32>,
    /// Byte offset in the text where each token ends.
    pub ends: Vec<usize>,
}

impl TokenizedText {
    /// Reads `path` and tokenizes bytes `offset..offset + max` of it (cut to whole characters
    /// for a tokenizer, which needs UTF-8; any bytes for a byte vocabulary).
    pub fn read(
        vocab: &Vocabulary,
        path: &Path,
        offset: usize,
        max: Option<usize>,
    ) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| ReportError::io(format!("reading {}", path.display()), e))?;
        Self::from_bytes(vocab, &bytes, path, offset, max)
    }

    /// As [`read`](Self::read), for the bytes of `path` already read.
    pub fn from_bytes(
        vocab: &Vocabulary,
        bytes: &[u8],
        path: &Path,
        offset: usize,
        max: Option<usize>,
    ) -> Result<Self> {
        let start = offset.min(bytes.len());
        let end = max.map_or(bytes.len(), |m| start.saturating_add(m).min(bytes.len()));
        if matches!(vocab, Vocabulary::Bytes) {
            let ids: Vec<u32> = bytes[start..end].iter().map(|&b| u32::from(b)).collect();
            return Ok(Self {
                ends: (1..=ids.len()).collect(),
                ids,
            });
        }
        // Whole characters only: skip a partial one at the start, drop one cut at the end.
        let mut s = start;
        while s < end && bytes[s] & 0xc0 == 0x80 {
            s += 1;
        }
        let slice = &bytes[s..end];
        let text = match std::str::from_utf8(slice) {
            Ok(t) => t,
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&slice[..e.valid_up_to()]).expect("valid up to here")
            }
            Err(e) => {
                return Err(ReportError::NotUtf8 {
                    path: path.to_path_buf(),
                    byte: s + e.valid_up_to(),
                })
            }
        };
        let e = vocab
            .encode_with_ends(text, false)
            .map_err(|e| ReportError::from(e).context(format!("tokenizing {}", path.display())))?;
        Ok(Self {
            ids: e.ids,
            ends: e.ends,
        })
    }

    /// Bytes of text the tokens scored in windows of `window` cover.
    pub fn scored_bytes(&self, window: usize) -> usize {
        scored_bytes(&self.ends, window, usize::MAX)
    }
}

/// Total bits over the bytes they cover.
pub fn bits_per_byte(score: &Score, bytes: usize) -> f64 {
    score.bits / bytes as f64
}
