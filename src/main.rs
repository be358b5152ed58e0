//! The `tquant` command line: argument parsing, progress and output only; the work is in the crates.

use clap::{Parser, Subcommand};
use tquant_convert::gguf::GgufError;
use tquant_convert::{ConvertError, Setting};
use tquant_model::ModelError;
use tquant_report::ReportError;

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
    let kind = |c: &(dyn std::error::Error + 'static)| c.downcast_ref().map(std::io::Error::kind);
    if !e
        .chain()
        .any(|c| kind(c) == Some(std::io::ErrorKind::BrokenPipe))
    {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, `: `-separated as anyhow's `{:#}` prints them, with the converter's
/// settings spelled as this command line's flags; a cause its parent already quotes is not
/// repeated (a converter error quotes all of its own).
fn message(e: &anyhow::Error) -> String {
    let mut out = Vec::new();
    for cause in e.chain() {
        let converter = convert_message(cause);
        let quotes_its_causes = converter.is_some();
        let text = converter.unwrap_or_else(|| cause.to_string());
        if !out.join(": ").contains(&text) {
            out.push(text);
        }
        if quotes_its_causes {
            break;
        }
    }
    out.join(": ")
}

/// The flag that sets each converter setting this command line has one for.
const FLAGS: [(Setting, &str); 15] = [
    (Setting::Format, "--format"),
    (Setting::Nu, "--nu"),
    (Setting::Block, "--block"),
    (Setting::ScaleDtype, "--scale-dtype"),
    (Setting::ScaleRule, "--scale-rule"),
    (Setting::Layout, "--layout"),
    (Setting::Calibration, "--calibrate"),
    (Setting::SelfCalibration, "--calibrate-self"),
    (Setting::Exclude, "--exclude"),
    (Setting::Drop, "--drop"),
    (Setting::Force, "--force"),
    (Setting::Damp, "--damp"),
    (Setting::CalibrationWindow, "--calibrate-window"),
    (Setting::MinTokensPerColumn, "--min-tokens-per-column"),
    (Setting::KeepAs, "--keep-as"),
];

/// The message of a converter error (also inside the report's and the model's errors) or of a
/// model error that names a setting, with the flags that set what it names.
fn convert_message(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let flag = |s: Setting| -> &'static str {
        FLAGS
            .iter()
            .find(|(k, _)| *k == s)
            .map_or(s.name(), |f| f.1)
    };
    let spell = |c: &ConvertError| Some(c.with_flags(&flag).to_string());
    if let Some(c) = e.downcast_ref::<ConvertError>() {
        return spell(c);
    }
    if let Some(GgufError::Checkpoint(c)) = e.downcast_ref::<GgufError>() {
        return spell(c);
    }
    match e.downcast_ref::<ModelError>() {
        Some(ModelError::Convert(c)) => return spell(c),
        Some(&ModelError::ContextTooLong {
            prompt,
            max_tokens,
            positions,
            limit,
        }) => {
            return Some(format!(
                "the prompt ({prompt} tokens) plus --max-tokens ({max_tokens}) make {positions} \
                 positions, more than the model's max_position_embeddings ({limit})"
            ))
        }
        Some(_) => return None,
        None => {}
    }
    match e.downcast_ref::<ReportError>()? {
        ReportError::Convert(c) | ReportError::Model(ModelError::Convert(c)) => spell(c),
        ReportError::Context { context, source } => {
            convert_message(source.as_ref()).map(|t| format!("{context}: {t}"))
        }
        _ => None,
    }
}
