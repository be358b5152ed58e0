//! `tquant eval`: bits per byte (byte vocabularies) or perplexity (token ids) of a model on a text.

use super::model_args::ModelArgs;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tquant_model::eval::{bits_per_byte, read_token_ids, score_windows};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Text file scored byte by byte (models with a 256-token byte vocabulary).
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
    /// Use only the first N bytes of --text.
    #[arg(long, default_value_t = usize::MAX)]
    pub max_bytes: usize,
    /// Use only the first N ids of --tokens-file.
    #[arg(long, default_value_t = usize::MAX)]
    pub max_tokens: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.model.open()?;
    if let Some(path) = &args.text {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let s = bits_per_byte(&model, &text, args.window, args.max_bytes)?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "bits_per_byte": s.bits_per_token(),
                    "tokens": s.tokens,
                    "seconds": s.seconds,
                })
            );
        } else {
            println!(
                "bits per byte {:.4} over {} bytes ({:.1} s, {:.0} tokens/s)",
                s.bits_per_token(),
                s.tokens,
                s.seconds,
                s.tokens as f64 / s.seconds
            );
        }
        return Ok(());
    }
    let Some(path) = &args.tokens_file else {
        bail!("give --text or --tokens-file");
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let ids = read_token_ids(&bytes).with_context(|| path.display().to_string())?;
    let s = score_windows(&model, &ids, args.window, args.max_tokens)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "perplexity": s.perplexity(),
                "bits_per_token": s.bits_per_token(),
                "tokens": s.tokens,
                "seconds": s.seconds,
            })
        );
    } else {
        println!(
            "perplexity {:.4} ({:.4} bits per token) over {} tokens ({:.1} s)",
            s.perplexity(),
            s.bits_per_token(),
            s.tokens,
            s.seconds
        );
    }
    Ok(())
}
