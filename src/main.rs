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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Formats(a) => cmd::formats::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
