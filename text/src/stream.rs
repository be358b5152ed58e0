//! Token-by-token decoding that hands out only complete UTF-8 text: a character split across
//! byte-level tokens comes out once, whole, when its last byte arrives.

use crate::vocabulary::Vocabulary;
use crate::Result;

/// Decodes ids one at a time (see [`Vocabulary::stream`]).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    vocab: &'a Vocabulary,
    ids: Vec<u32>,
    /// Ids before `prefix` are printed and no longer needed as context.
    prefix: usize,
    /// Ids before `read` are printed.
    read: usize,
}

// The decoder sits above the vocabulary it reads, so the vocabulary's constructor for it is here.
impl Vocabulary {
    /// A decoder to push generated ids into one at a time.
    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

impl<'a> StreamDecoder<'a> {
    fn new(vocab: &'a Vocabulary) -> Self {
        Self {
            vocab,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds `id`; returns the text that is now complete (often empty while a character is
    /// split across tokens).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        // Decoding from `prefix` (not `read`) keeps the context some decoders need (e.g. a
        // leading-space rule), and the printed part is cut off again as text.
        let before = self.vocab.decode_lossy(&self.ids[self.prefix..self.read])?;
        let now = self.vocab.decode_lossy(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            if let Some(new) = now.get(before.len()..).filter(|_| now.starts_with(&before)) {
                let new = new.to_string();
                self.prefix = self.read;
                self.read = self.ids.len();
                return Ok(new);
            }
        }
        Ok(String::new())
    }

    /// What is still held back at the end (an incomplete character comes out as U+FFFD).
    pub fn flush(&mut self) -> Result<String> {
        let before = self.vocab.decode_lossy(&self.ids[self.prefix..self.read])?;
        let now = self.vocab.decode_lossy(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.strip_prefix(&before).map(str::to_string).unwrap_or(now))
    }
}
