//! The `tquant` command line: argument parsing, progress and output only; the work is in the crates.

use clap::{Parser, Subcommand};

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
    let cli = Cli::parse();
    let result = match cli.command {
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
    if let Err(e) = result {
        // `tquant ... | head`: the reader has all it wanted.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            return;
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
