//! What `tquant eval` reports of a [`Score`]: bits per byte of a text, perplexity of token ids,
//! as a line of text or as JSON.

use crate::text_input::{bits_per_byte, TokenizedText};
use crate::{ReportError, ReportInput, Result};
use serde_json::{json, Value};
use std::fmt;
use std::path::Path;
use tquant_model::eval::{read_token_ids, score_windows_observed, Score};
use tquant_model::{Logits, Model, ModelError};
use tquant_text::Vocabulary;

/// Calls `done(chunks done, chunks)` as the chunks of a score finish (for progress).
pub type Done<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// `model`'s score on the text at `path` (its first `max_bytes`, default all, read through
/// the vocabulary of the model directory `dir`) in chunks of `window + 1` tokens. A vocabulary
/// that cannot be opened is a [`ReportError::Input`] of [`ReportInput::Vocabulary`], a scoring
/// failure a [`ReportError::Scoring`] in the context of the file.
pub fn evaluate_text(
    model: &Model,
    dir: &Path,
    path: &Path,
    window: usize,
    max_bytes: Option<usize>,
    done: Done,
) -> Result<EvalSummary> {
    let vocab = Vocabulary::open(dir, Some(model.config().vocab_size)).map_err(|e| {
        let source = Box::new(e.into());
        ReportError::Input {
            input: ReportInput::Vocabulary,
            source,
        }
    })?;
    let vocab = &vocab;
    let text = TokenizedText::read(vocab, path, 0, max_bytes)?;
    let score = score_windows_observed(model, &text.ids, window, usize::MAX, done)
        .map_err(|e| ReportError::Scoring(e).context(format!("scoring {}", path.display())))?;
    Ok(EvalSummary::of_text(score, vocab, &text, window))
}

/// `model`'s logits for `tokens` from an empty cache (`which` positions), as `tquant logits`
/// prints them: `{"logits": [[...], ...]}`, a row of the vocabulary's size per position.
pub fn logits_json(model: &Model, tokens: &[u32], which: Logits) -> Result<Value, ModelError> {
    let logits = model.forward(tokens, &mut model.new_cache(), which)?;
    let rows: Vec<&[f32]> = logits.chunks(model.config().vocab_size).collect();
    Ok(json!({ "logits": rows }))
}

/// `model`'s perplexity on the little-endian u32 token ids at `path` (the first `max_tokens`,
/// default all) in chunks of `window + 1`; a scoring failure is a [`ReportError::Scoring`].
pub fn evaluate_ids(
    model: &Model,
    path: &Path,
    window: usize,
    max_tokens: Option<usize>,
    done: Done,
) -> Result<EvalSummary> {
    let bytes = std::fs::read(path)
        .map_err(|e| ReportError::io(format!("reading {}", path.display()), e))?;
    let ids = read_token_ids(&bytes)
        .map_err(|e| ReportError::from(e).context(path.display().to_string()))?;
    let max = max_tokens.unwrap_or(usize::MAX);
    let score =
        score_windows_observed(model, &ids, window, max, done).map_err(ReportError::Scoring)?;
    Ok(EvalSummary::Tokens(score))
}

/// A model's score on a text or on token ids, with what it means per byte where there are bytes.
///
/// ```
/// use tquant_model::eval::Score;
/// use tquant_report::EvalSummary;
/// let score = Score { bits: 2000.0, tokens: 1000, seconds: 2.0 };
/// let s = EvalSummary::Text { score, bytes: 4000 };
/// assert_eq!(s.to_json()["bits_per_byte"], 0.5);
/// assert!(s.to_string().starts_with("bits per byte 0.5000 over 4000 bytes; perplexity 4.0000"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalSummary {
    /// A text read by a byte vocabulary: a token is a byte.
    Bytes(Score),
    /// A tokenized text: per token, and per byte of the text the scored tokens cover.
    Text {
        /// The score of the tokens.
        score: Score,
        /// Bytes of text the scored tokens cover.
        bytes: usize,
    },
    /// Token ids: per token only.
    Tokens(Score),
}

impl EvalSummary {
    /// The summary of `score`, the score of `text` (read with `vocab`) in windows of `window`.
    pub fn of_text(score: Score, vocab: &Vocabulary, text: &TokenizedText, window: usize) -> Self {
        if matches!(vocab, Vocabulary::Bytes) {
            Self::Bytes(score)
        } else {
            Self::Text {
                score,
                bytes: text.scored_bytes(window),
            }
        }
    }

    /// The fields `tquant eval --json` prints: `bits_per_byte` for a text, `perplexity` and
    /// `bits_per_token` for tokens, `bytes` for a tokenized text, `tokens` and `seconds`.
    pub fn to_json(&self) -> Value {
        match *self {
            Self::Bytes(s) => json!({
                "bits_per_byte": s.bits_per_token(),
                "tokens": s.tokens,
                "seconds": s.seconds,
            }),
            Self::Text { score: s, bytes } => json!({
                "bits_per_byte": bits_per_byte(&s, bytes),
                "perplexity": s.perplexity(),
                "bits_per_token": s.bits_per_token(),
                "tokens": s.tokens,
                "bytes": bytes,
                "seconds": s.seconds,
            }),
            Self::Tokens(s) => json!({
                "perplexity": s.perplexity(),
                "bits_per_token": s.bits_per_token(),
                "tokens": s.tokens,
                "seconds": s.seconds,
            }),
        }
    }
}

/// One line, ending in a newline.
impl fmt::Display for EvalSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Bytes(s) => writeln!(
                f,
                "bits per byte {:.4} over {} bytes ({:.1} s, {:.0} tokens/s)",
                s.bits_per_token(),
                s.tokens,
                s.seconds,
                s.tokens as f64 / s.seconds
            ),
            Self::Text { score: s, bytes } => writeln!(
                f,
                "bits per byte {:.4} over {bytes} bytes; perplexity {:.4} ({:.4} bits per token) \
                 over {} tokens ({:.1} s, {:.0} tokens/s)",
                bits_per_byte(&s, bytes),
                s.perplexity(),
                s.bits_per_token(),
                s.tokens,
                s.seconds,
                s.tokens as f64 / s.seconds
            ),
            Self::Tokens(s) => writeln!(
                f,
                "perplexity {:.4} ({:.4} bits per token) over {} tokens ({:.1} s)",
                s.perplexity(),
                s.bits_per_token(),
                s.tokens,
                s.seconds
            ),
        }
    }
}
