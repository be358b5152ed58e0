//! The model's vocabulary for eval and run, with the option that takes token ids instead named
//! when the model has none; text as token ids is `tquant_report::text_input`.

use anyhow::{Context, Result};
use std::path::Path;
pub use tquant_report::text_input::{bits_per_byte, TokenizedText};
use tquant_text::Vocabulary;

/// The vocabulary of the model at `dir` (`vocab` ids); `ids_flag` is the option that takes
/// token ids instead, named in the error when the model has no usable tokenizer.
pub fn vocabulary(dir: &Path, vocab: usize, ids_flag: &str) -> Result<Vocabulary> {
    Vocabulary::open(dir, Some(vocab)).with_context(|| {
        format!(
            "text needs tokenizer.json beside the model (or a 256-token byte vocabulary); \
             or give token ids with {ids_flag}"
        )
    })
}
