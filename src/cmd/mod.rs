//! One module per subcommand; each owns its arguments (`Args`) and its `run` function.

pub mod bench;
/// `--calibrate` and its settings, shared by convert and report.
pub mod calibration;
pub mod convert;
pub mod eval;
pub mod formats;
pub mod inspect;
pub mod logits;
pub mod model_args;
/// Progress bars on a terminal.
pub mod progress;
pub mod report;
pub mod run;
/// Text files as token ids, shared by eval and run.
pub mod text_input;
pub mod tokenize;
pub mod verify;
