//! The `tquant` command line: argument parsing, progress and output only; the work is in the crates.

use clap::{Parser, Subcommand};
use tquant_convert::Setting;
use tquant_report::messages::{self, Spelling};

mod cmd;

#[derive(Debug, Parser)]
#[command(
    name = "tquant",
    version,
    about = "4-bit weight formats for LLMs on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One variant per command; each module in src/cmd/ owns its arguments and its run function.
#[derive(Debug, Subcommand)]
enum Command {
    /// List every format with its values in code order.
    Formats(cmd::formats::Args),
    /// Quantize a safetensors checkpoint into a self-describing quantized checkpoint.
    Convert(cmd::convert::Args),
    /// Show every tensor of a checkpoint: format, block, scale dtype, bits per weight, nu.
    Inspect(cmd::inspect::Args),
    /// Compare a quantized checkpoint with its original, tensor by tensor.
    Verify(cmd::verify::Args),
    /// Print a model's logits for a list of token ids, as JSON.
    Logits(cmd::logits::Args),
    /// Bits per byte and perplexity of a model on a text (or perplexity on token ids).
    Eval(cmd::eval::Args),
    /// Generate text from a prompt, or chat.
    Run(cmd::run::Args),
    /// Token ids of a text with a model's tokenizer.json, or the text of ids.
    Tokenize(cmd::tokenize::Args),
    /// Accuracy-vs-area report across formats.
    Report(cmd::report::Args),
    /// Measure the dequant-matmul kernels against the f32 path and memory bandwidth.
    Bench(cmd::bench::Args),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Formats(a) => cmd::formats::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    let Err(e) = result else { return };
    // `tquant ... | head`: the reader has all it wanted.
    if !messages::is_closed_pipe(e.chain()) {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The flag that sets each converter setting this command line has one for.
fn flag(s: Setting) -> &'static str {
    match s {
        Setting::Format => "--format",
        Setting::Nu => "--nu",
        Setting::Block => "--block",
        Setting::ScaleDtype => "--scale-dtype",
        Setting::ScaleRule => "--scale-rule",
        Setting::Layout => "--layout",
        Setting::Calibration => "--calibrate",
        Setting::SelfCalibration => "--calibrate-self",
        Setting::Exclude => "--exclude",
        Setting::Drop => "--drop",
        Setting::Force => "--force",
        Setting::Damp => "--damp",
        Setting::CalibrationWindow => "--calibrate-window",
        Setting::MinTokensPerColumn => "--min-tokens-per-column",
        Setting::KeepAs => "--keep-as",
        Setting::CalibrationIds => "--calibrate-ids",
        Setting::CalibrationOffset => "--calibrate-offset",
        Setting::CalibrationBytes => "--calibrate-bytes",
        Setting::Quality => "--quality",
        Setting::Tokenizer => "--tokenizer",
        s => s.name(),
    }
}

/// The error and its causes on one line, with the settings they name spelled as flags.
fn message(e: &anyhow::Error) -> String {
    let spelling = Spelling {
        setting: &flag,
        max_tokens: "--max-tokens",
        window: "--window",
        program: "tquant ",
        prompt: "--prompt",
        chat: "--chat",
        text_ids: "--tokens-file",
        formats: "--formats",
        eval: "`tquant eval`",
        generate: "`tquant run --temperature 1`",
    };
    messages::one_line(e.chain(), &spelling)
}
