//! `tquant tokenize`: a text's token ids with a model folder's tokenizer.json, or the text of ids.

use super::emit;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tquant_text::{Tokenized, Tokenizer};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder holding tokenizer.json (and optionally tokenizer_config.json, config.json).
    pub model: PathBuf,
    /// Text file to tokenize (UTF-8).
    #[arg(long, conflicts_with_all = ["prompt", "decode"])]
    pub text: Option<PathBuf>,
    /// Text to tokenize.
    #[arg(long, conflicts_with = "decode")]
    pub prompt: Option<String>,
    /// Comma-separated ids to turn back into text.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub decode: Option<Vec<u32>>,
    /// Add the tokens the tokenizer config adds (e.g. BOS).
    #[arg(long)]
    pub special: bool,
    /// Print JSON: {"ids": [...]} (or {"text": ...} with --decode).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let tok = Tokenizer::from_dir(&args.model)
        .with_context(|| format!("reading the tokenizer of {}", args.model.display()))?;
    let out = if let Some(ids) = &args.decode {
        Tokenized::Text(tok.decode(ids)?)
    } else {
        let text = match (&args.text, &args.prompt) {
            (Some(path), _) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {} (UTF-8 text)", path.display()))?,
            (None, Some(p)) => p.clone(),
            (None, None) => bail!("give --text FILE, --prompt TEXT or --decode IDS"),
        };
        Tokenized::Ids(tok.encode(&text, args.special)?)
    };
    // One line of JSON; the ids comma-separated, as --decode, `run --prompt-tokens` and
    // `logits --tokens` take them.
    emit(&if args.json {
        format!("{}\n", serde_json::to_string(&out)?)
    } else {
        out.to_string()
    })
}
