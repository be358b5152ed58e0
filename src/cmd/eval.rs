//! `tquant eval`: bits per byte and perplexity of a model on a text, or perplexity on ids.

use super::model_args::ModelArgs;
use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;
use tquant_model::eval::{read_token_ids, score_windows_observed, Score};
use tquant_model::{Model, ModelError};
use tquant_report::text_input::TokenizedText;
use tquant_report::EvalSummary;

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

fn score(model: &Model, ids: &[u32], window: usize, max: Option<usize>) -> Result<Score> {
    let bar = super::progress_bar(0);
    bar.set_message("chunks scored");
    let s = score_windows_observed(model, ids, window, max.unwrap_or(usize::MAX), &|d, n| {
        bar.set_length(n as u64);
        bar.set_position(d as u64);
    })
    .map_err(|e| match e {
        ModelError::TooFewTokens { .. } => anyhow!("{e}; use a smaller --window or more text"),
        e => e.into(),
    })?;
    bar.finish_and_clear();
    Ok(s)
}

pub fn run(args: Args) -> Result<()> {
    let model = args.model.open()?;
    let summary = match (&args.text, &args.tokens_file) {
        (Some(path), _) => {
            let vocab_size = model.config().vocab_size;
            let vocab = super::vocabulary(&args.model.model, vocab_size, "--tokens-file")?;
            let text = TokenizedText::read(&vocab, path, 0, args.max_bytes)?;
            let s = score(&model, &text.ids, args.window, None)
                .with_context(|| format!("scoring {}", path.display()))?;
            EvalSummary::of_text(s, &vocab, &text, args.window)
        }
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let ids = read_token_ids(&bytes).with_context(|| path.display().to_string())?;
            EvalSummary::Tokens(score(&model, &ids, args.window, args.max_tokens)?)
        }
        (None, None) => anyhow::bail!("give --text or --tokens-file"),
    };
    super::emit(&if args.json {
        format!("{}\n", summary.to_json())
    } else {
        summary.to_string()
    })
}
