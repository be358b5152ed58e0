//! The command line end to end: `tquant` run as a process on the bundled model and small inputs.
//!
//! One test binary for the files below (each stays a module under its own name), so the
//! suite links a few binaries rather than one per file.

mod support;

mod auto_cli;
mod cli_messages;
mod examples_run;
mod model_cli;
mod report_cli;
mod report_reference;
mod text_cli;
