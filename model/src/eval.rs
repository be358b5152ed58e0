//! Bits per byte (byte vocabularies) and perplexity (any vocabulary) over consecutive windows.
//!
//! The first `max` tokens are cut into chunks of `window + 1`; each chunk is run from an empty
//! cache and scores its last `window` tokens given the ones before them in the chunk. A trailing
//! partial chunk is dropped (as the reference measurement does).

use crate::model::{Logits, Model};
use crate::ModelError;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Summed negative log-likelihood of scored tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Total bits (negative log2-likelihood).
    pub bits: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Wall time.
    pub seconds: f64,
}

impl Score {
    /// Bits per scored token (bits per byte for a byte vocabulary).
    pub fn bits_per_token(&self) -> f64 {
        self.bits / self.tokens as f64
    }

    /// `2^(bits per token)`, the perplexity.
    pub fn perplexity(&self) -> f64 {
        self.bits_per_token().exp2()
    }
}

/// `-log2 softmax(logits)[target]`, in f64.
pub fn bits_of(logits: &[f32], target: usize) -> f64 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = m + logits
        .iter()
        .map(|&l| (l as f64 - m).exp())
        .sum::<f64>()
        .ln();
    (lse - logits[target] as f64) / std::f64::consts::LN_2
}

/// Scores the first `max_tokens` of `tokens` in windows of `window`.
pub fn score_windows(
    model: &Model,
    tokens: &[u32],
    window: usize,
    max_tokens: usize,
) -> Result<Score, ModelError> {
    score_windows_observed(model, tokens, window, max_tokens, &|_, _| {})
}

/// [`score_windows`], calling `done(chunks done, chunks)` as chunks finish (for progress).
pub fn score_windows_observed(
    model: &Model,
    tokens: &[u32],
    window: usize,
    max_tokens: usize,
    done: &(dyn Fn(usize, usize) + Sync),
) -> Result<Score, ModelError> {
    if window == 0 {
        return Err(ModelError::EmptyWindow);
    }
    check_window(model, window)?;
    let data = &tokens[..tokens.len().min(max_tokens)];
    let chunk = window + 1;
    if data.len() < chunk {
        return Err(ModelError::TooFewTokens {
            tokens: data.len(),
            chunk,
        });
    }
    let vocab = model.config().vocab_size;
    let chunks = data.len() / chunk;
    let finished = AtomicUsize::new(0);
    let start = Instant::now();
    let bits: Vec<f64> = model.install(|| {
        data.par_chunks_exact(chunk)
            .map(|c| {
                let mut cache = model.new_cache();
                let logits = model.forward_here(&c[..window], &mut cache, Logits::All)?;
                let bits = logits
                    .chunks_exact(vocab)
                    .zip(&c[1..])
                    .map(|(l, &t)| bits_of(l, t as usize))
                    .sum();
                done(finished.fetch_add(1, Ordering::Relaxed) + 1, chunks);
                Ok(bits)
            })
            .collect::<Result<_, ModelError>>()
    })?;
    Ok(Score {
        bits: bits.iter().sum(),
        tokens: bits.len() * window,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Refuses a window the model has no positions for: a chunk runs `window` tokens from position
/// 0, and the window must leave the chunk's last position inside `max_position_embeddings`.
pub fn check_window(model: &Model, window: usize) -> Result<(), ModelError> {
    let limit = model.config().max_position_embeddings;
    if window + 1 > limit {
        return Err(ModelError::WindowTooLong { window, limit });
    }
    Ok(())
}

/// Bytes of text the scored tokens of [`score_windows`] cover: `ends[i]` is the byte offset
/// where token `i` ends. In each chunk of `window + 1` tokens the first is context only, so a
/// chunk covers the bytes after its first token's end up to its last token's end.
pub fn scored_bytes(ends: &[usize], window: usize, max_tokens: usize) -> usize {
    let chunk = window + 1;
    ends[..ends.len().min(max_tokens)]
        .chunks_exact(chunk)
        .map(|c| c[window].saturating_sub(c[0]))
        .sum()
}

/// Bits per byte of `text` for a model whose token ids are byte values (vocabulary 256).
pub fn bits_per_byte(
    model: &Model,
    text: &[u8],
    window: usize,
    max_bytes: usize,
) -> Result<Score, ModelError> {
    if model.config().vocab_size != 256 {
        return Err(ModelError::NotByteVocabulary {
            vocab: model.config().vocab_size,
        });
    }
    let tokens: Vec<u32> = text[..text.len().min(max_bytes)]
        .iter()
        .map(|&b| b as u32)
        .collect();
    score_windows(model, &tokens, window, max_bytes)
}

/// Reads token ids stored as little-endian u32.
pub fn read_token_ids(bytes: &[u8]) -> Result<Vec<u32>, ModelError> {
    if bytes.len() % 4 != 0 {
        return Err(ModelError::TokenFileLength { bytes: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_of_uniform_is_log2_vocab() {
        let l = vec![0.5f32; 256];
        assert!((bits_of(&l, 7) - 8.0).abs() < 1e-12);
    }

    #[test]
    fn scored_bytes_leave_out_each_chunks_first_token_and_the_tail() {
        // Tokens of 1, 3, 2, 1, 4, 2, 2 bytes; windows of 2 make chunks (0..3) and (3..6).
        let ends = [1, 4, 6, 7, 11, 13, 15];
        assert_eq!(scored_bytes(&ends, 2, usize::MAX), (6 - 1) + (13 - 7));
        assert_eq!(scored_bytes(&ends, 2, 5), 5);
        // Byte tokens: each chunk scores `window` bytes.
        let bytes: Vec<usize> = (1..=700).collect();
        assert_eq!(scored_bytes(&bytes, 64, usize::MAX), 640);
    }

    #[test]
    fn token_file_must_be_whole_u32s() {
        assert_eq!(read_token_ids(&[1, 0, 0, 0, 2, 1, 0, 0]).unwrap(), [1, 258]);
        assert!(read_token_ids(&[1, 2, 3]).is_err());
    }
}
