//! `tquant eval`: bits per byte and perplexity of a model on a text, or perplexity on ids.

use super::model_args::ModelArgs;
use anyhow::Result;
use std::path::PathBuf;
use tquant_report::evaluation::{evaluate_ids, evaluate_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Text file, through the model's tokenizer: reports bits per byte and perplexity.
    #[arg(
        long,
        conflicts_with = "tokens_file",
        required_unless_present = "tokens_file"
    )]
    pub text: Option<PathBuf>,
    /// Token ids as little-endian u32 (any vocabulary): reports perplexity.
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Tokens scored per chunk; each chunk holds window + 1 tokens.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Use only the first N bytes of --text (cut before tokenizing; default: all).
    #[arg(long, value_name = "N")]
    pub max_bytes: Option<usize>,
    /// Use only the first N ids of --tokens-file (default: all).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.model.open_with(tquant_model::Mode::Exact)?;
    let bar = super::progress_bar(0);
    bar.set_message("chunks scored");
    let done = |d: usize, n: usize| {
        bar.set_length(n as u64);
        bar.set_position(d as u64);
    };
    let (dir, window) = (&args.model.model, args.window);
    let summary = match (&args.text, &args.tokens_file) {
        (Some(path), _) => evaluate_text(&model, dir, path, window, args.max_bytes, &done),
        (None, Some(path)) => evaluate_ids(&model, path, window, args.max_tokens, &done),
        _ => anyhow::bail!("give --text or --tokens-file"),
    };
    bar.finish_and_clear();
    super::emit(&if args.json {
        format!("{}\n", summary?.to_json())
    } else {
        summary?.to_string()
    })
}
