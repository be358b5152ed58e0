//! `tquant run`: generate from a prompt, a chat or token ids, streaming; speeds go to stderr.

use super::model_args::ModelArgs;
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use tquant_model::generate::{Sampler, Stats};
use tquant_model::Generation;
use tquant_report::streaming::{self, needs_vocabulary, Prompt};
use tquant_text::UserTurns;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prompt text, through the model's tokenizer (or byte vocabulary); with --chat, the message.
    #[arg(long, required_unless_present_any = ["prompt_tokens", "chat"])]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids (any vocabulary); the output is ids too.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["prompt", "chat"])]
    pub prompt_tokens: Option<Vec<u32>>,
    /// Chat through the chat_template: a conversation on a terminal, else one answer to --prompt
    /// (or to standard input).
    #[arg(long)]
    pub chat: bool,
    /// System message of the chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Tokens to generate (per answer with --chat).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Sample only among the most likely tokens whose probabilities add up to P (1: all).
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Seed of the sampler (the same seed gives the same output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Go on past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.model.open_with(tquant_model::Mode::Fast)?;
    let sampler = Sampler::with_filters(args.temperature, args.top_k, args.top_p, args.seed)?;
    let generation = Generation::new(&model, sampler, args.max_tokens);
    let (dir, vocab_size) = (&args.model.model, model.config().vocab_size);
    let ids = args.prompt_tokens.as_deref();
    let vocab = needs_vocabulary(dir, ids.is_some(), args.ignore_eos)
        .then(|| super::vocabulary(dir, vocab_size, "--prompt-tokens"))
        .transpose()?;
    let prompt = match (ids, &args.prompt) {
        (Some(ids), _) => Prompt::Ids(ids),
        (None, _) if args.chat => Prompt::Chat {
            system: args.system.as_deref(),
            model: dir,
        },
        (None, Some(text)) => Prompt::Text(text),
        _ => bail!("give --prompt, --prompt-tokens or --chat"),
    };
    let stdin = std::io::stdin();
    let mut turns = UserTurns::new(stdin.lock(), stdin.is_terminal(), args.prompt.as_deref());
    let prompt_user = |first| {
        if first {
            eprintln!("(an empty line or end of input ends the conversation)");
        }
        eprint!("> ");
    };
    let next = || {
        turns
            .next_message(prompt_user)
            .context("reading the message from standard input")
    };
    let (v, ignore_eos) = (vocab.as_ref(), args.ignore_eos);
    streaming::respond(generation, v, prompt, ignore_eos, next, print, answered)
}

fn print(piece: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(piece.as_bytes())
        .and_then(|_| out.flush())
        .context("writing the output")
}

/// Ends an answer's line; its speeds go to stderr.
fn answered(generation: &Generation, stats: &Stats) -> Result<()> {
    writeln!(std::io::stdout())?;
    eprintln!("{}", generation.speeds(stats));
    Ok(())
}
