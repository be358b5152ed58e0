//! `tquant run`: generate from a prompt, a chat or token ids, streaming; speeds go to stderr.

use super::model_args::ModelArgs;
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use tquant_model::generate::{Sampler, Stats};
use tquant_model::Generation;
use tquant_report::streaming;
use tquant_text::{Conversation, UserTurns, Vocabulary};

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
    let mut generation = Generation::new(&model, sampler, args.max_tokens);
    let (dir, vocab_size) = (&args.model.model, model.config().vocab_size);
    // With ids, a tokenizer beside the model, where there is one, says which id ends a generation.
    let vocab = if args.prompt_tokens.is_some()
        && (args.ignore_eos || !dir.join("tokenizer.json").is_file())
    {
        None
    } else {
        Some(super::vocabulary(dir, vocab_size, "--prompt-tokens")?)
    };
    if let Some(v) = vocab.as_ref().filter(|_| !args.ignore_eos) {
        generation = generation.stop_at(v.eos_ids());
    }
    match (&args.prompt_tokens, &vocab, &args.prompt) {
        (Some(ids), ..) => answer(&mut generation, None, ids),
        (None, Some(v), _) if args.chat => chat(&args, &mut generation, v),
        (None, Some(v), Some(prompt)) => {
            let ids = v.encode(prompt, true).context("tokenizing --prompt")?;
            answer(&mut generation, Some(v), &ids)
        }
        _ => bail!("give --prompt, --prompt-tokens or --chat"),
    }
}

/// Generates after `ids`, streaming the text (or the ids, without `vocab`) to stdout.
fn answer(generation: &mut Generation, vocab: Option<&Vocabulary>, ids: &[u32]) -> Result<()> {
    let (_, stats) = streaming::generate(generation, vocab, ids, print)?;
    answered(generation, &stats)
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

/// One answer per user message; the whole conversation is the prompt of each answer.
fn chat(args: &Args, generation: &mut Generation, vocab: &Vocabulary) -> Result<()> {
    let dir = args.model.model.display();
    let Some(tokenizer) = vocab.tokenizer() else {
        bail!("--chat needs a tokenizer.json with a chat_template in its tokenizer_config.json beside {dir}");
    };
    let template = tokenizer
        .chat_template()
        .with_context(|| format!("--chat: {dir} has no chat_template in tokenizer_config.json"))?;
    let mut conversation = Conversation::new(template, args.system.as_deref());
    let stdin = std::io::stdin();
    let mut turns = UserTurns::new(stdin.lock(), stdin.is_terminal(), args.prompt.as_deref());
    let prompt = |first| {
        if first {
            eprintln!("(an empty line or end of input ends the conversation)");
        }
        eprint!("> ");
    };
    let next = || {
        turns
            .next_message(prompt)
            .context("reading the message from standard input")
    };
    streaming::chat(generation, vocab, &mut conversation, next, print, answered)
}
