//! One module per subcommand (its `Args` and `run`), and their shared output helpers.

pub mod bench;
/// `--calibrate` and its settings, shared by convert and report.
pub mod calibration;
pub mod convert;
pub mod eval;
pub mod formats;
pub mod inspect;
pub mod logits;
pub mod model_args;
pub mod report;
pub mod run;
pub mod tokenize;
pub mod verify;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::Path;
use tquant_text::Vocabulary;

/// Prints command output; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// Prints `value` as pretty JSON with `--json`, as its text otherwise.
pub fn emit_either<T: serde::Serialize + std::fmt::Display>(json: bool, value: &T) -> Result<()> {
    if json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(value)?));
    }
    emit(&value.to_string())
}

/// A bar of `steps` with a message on stderr when it is a terminal; a hidden one otherwise.
pub fn progress_bar(steps: u64) -> ProgressBar {
    styled_bar(
        steps,
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        "=> ",
    )
}

/// A bar of `steps` drawn by `template` with `chars` on stderr when it is a terminal.
pub fn styled_bar(steps: u64, template: &str, chars: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template).expect("valid template");
    ProgressBar::new(steps).with_style(style.progress_chars(chars))
}

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
