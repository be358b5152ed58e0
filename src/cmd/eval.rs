//! `tquant eval`: bits per byte and perplexity of a model on a text (tokenized with the model's
//! tokenizer.json, or byte by byte for a byte vocabulary), or perplexity on token ids.

use super::convert::emit;
use super::model_args::ModelArgs;
use super::progress;
use super::text_input::{self, TokenizedText};
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use tquant_model::eval::{read_token_ids, score_windows_observed, Score};
use tquant_model::{Model, ModelError};
use tquant_text::Vocabulary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Text file: tokenized with the model's tokenizer.json (or byte by byte for a 256-token
    /// byte vocabulary); reports bits per byte and perplexity.
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
    let bar = progress::bar(0);
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
    if let Some(path) = &args.text {
        let vocab = text_input::vocabulary(
            &args.model.model,
            model.config().vocab_size,
            "--tokens-file",
        )?;
        let text = TokenizedText::read(&vocab, path, 0, args.max_bytes)?;
        let s = score(&model, &text.ids, args.window, None)
            .with_context(|| format!("scoring {}", path.display()))?;
        let summary = if matches!(vocab, Vocabulary::Bytes) {
            bytes_summary(&s, args.json)
        } else {
            text_summary(&s, text.scored_bytes(args.window), args.json)
        };
        return emit(&summary);
    }
    let Some(path) = &args.tokens_file else {
        bail!("give --text or --tokens-file");
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ids = read_token_ids(&bytes).with_context(|| path.display().to_string())?;
    let s = score(&model, &ids, args.window, args.max_tokens)?;
    let summary = if args.json {
        format!(
            "{}\n",
            serde_json::json!({
                "perplexity": s.perplexity(),
                "bits_per_token": s.bits_per_token(),
                "tokens": s.tokens,
                "seconds": s.seconds,
            })
        )
    } else {
        format!(
            "perplexity {:.4} ({:.4} bits per token) over {} tokens ({:.1} s)\n",
            s.perplexity(),
            s.bits_per_token(),
            s.tokens,
            s.seconds
        )
    };
    emit(&summary)
}

/// A byte vocabulary: a token is a byte.
fn bytes_summary(s: &Score, json: bool) -> String {
    if json {
        format!(
            "{}\n",
            serde_json::json!({
                "bits_per_byte": s.bits_per_token(),
                "tokens": s.tokens,
                "seconds": s.seconds,
            })
        )
    } else {
        format!(
            "bits per byte {:.4} over {} bytes ({:.1} s, {:.0} tokens/s)\n",
            s.bits_per_token(),
            s.tokens,
            s.seconds,
            s.tokens as f64 / s.seconds
        )
    }
}

/// A tokenized text: per token, and per byte of the text the scored tokens cover.
fn text_summary(s: &Score, bytes: usize, json: bool) -> String {
    let bpb = text_input::bits_per_byte(s, bytes);
    if json {
        format!(
            "{}\n",
            serde_json::json!({
                "bits_per_byte": bpb,
                "perplexity": s.perplexity(),
                "bits_per_token": s.bits_per_token(),
                "tokens": s.tokens,
                "bytes": bytes,
                "seconds": s.seconds,
            })
        )
    } else {
        format!(
            "bits per byte {bpb:.4} over {bytes} bytes; perplexity {:.4} ({:.4} bits per token) \
             over {} tokens ({:.1} s, {:.0} tokens/s)\n",
            s.perplexity(),
            s.bits_per_token(),
            s.tokens,
            s.seconds,
            s.tokens as f64 / s.seconds
        )
    }
}
