//! `tquant run`: generate from a prompt (text through the model's tokenizer or byte vocabulary,
//! a chat through its chat template, or token ids), streaming the output; speeds go to stderr.

use super::model_args::ModelArgs;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Read, Write};
use tquant_model::generate::Sampler;
use tquant_model::{Generation, ModelError};
use tquant_text::{Conversation, Vocabulary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prompt text, tokenized with the model's tokenizer.json (BOS as its config says), or byte
    /// by byte for a 256-token byte vocabulary. With --chat: the user's message.
    #[arg(long, required_unless_present_any = ["prompt_tokens", "chat"])]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids (any vocabulary); the output is ids too.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["prompt", "chat"])]
    pub prompt_tokens: Option<Vec<u32>>,
    /// Chat through the checkpoint's chat_template: one answer to --prompt (or to standard
    /// input) when standard input is not a terminal, a conversation when it is.
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
    let model = args.model.open()?;
    let sampler = Sampler::with_filters(args.temperature, args.top_k, args.top_p, args.seed)?;
    let mut generation = Generation::new(&model, sampler, args.max_tokens);
    let (dir, vocab_size) = (&args.model.model, model.config().vocab_size);
    if let Some(prompt) = &args.prompt_tokens {
        // A tokenizer beside the model, where there is one, says which id ends a generation.
        if dir.join("tokenizer.json").is_file() && !args.ignore_eos {
            let vocab = super::vocabulary(dir, vocab_size, "--prompt-tokens")?;
            generation = generation.stop_at(vocab.eos_ids());
        }
        return run_ids(&mut generation, prompt);
    }
    let vocab = super::vocabulary(dir, vocab_size, "--prompt-tokens")?;
    if !args.ignore_eos {
        generation = generation.stop_at(vocab.eos_ids());
    }
    if args.chat {
        return chat(&args, &mut generation, &vocab);
    }
    let Some(prompt) = &args.prompt else {
        bail!("give --prompt, --prompt-tokens or --chat");
    };
    let ids = vocab.encode(prompt, true).context("tokenizing --prompt")?;
    answer(&mut generation, &vocab, &ids)?;
    Ok(())
}

/// Generates after `ids`, streaming the text to stdout; returns the text.
fn answer(generation: &mut Generation, vocab: &Vocabulary, ids: &[u32]) -> Result<String> {
    let mut stream = vocab.stream();
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    let stats = generation
        .run(ids, |t| {
            let piece = stream.push(t).context("writing the output")?;
            out.write_all(piece.as_bytes())
                .and_then(|_| out.flush())
                .context("writing the output")?;
            text.push_str(&piece);
            anyhow::Ok(())
        })
        .map_err(with_flags)?;
    let rest = stream.flush()?;
    text.push_str(&rest);
    writeln!(out, "{rest}")?;
    eprintln!("{}", generation.speeds(&stats));
    Ok(text)
}

/// Ids in, ids out (comma-separated, as --prompt-tokens takes them).
fn run_ids(generation: &mut Generation, prompt: &[u32]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut sep = "";
    let stats = generation
        .run(prompt, |t| {
            write!(out, "{sep}{t}")
                .and_then(|_| out.flush())
                .context("writing the output")?;
            sep = ",";
            anyhow::Ok(())
        })
        .map_err(with_flags)?;
    writeln!(out)?;
    eprintln!("{}", generation.speeds(&stats));
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
    let mut turn = |user: &str| {
        // The template writes BOS itself.
        let ids = vocab.encode(&conversation.ask(user)?, false)?;
        let text = answer(generation, vocab, &ids)?;
        conversation.answered(&text);
        anyhow::Ok(())
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        if let Some(p) = &args.prompt {
            return turn(p);
        }
        let mut s = String::new();
        stdin
            .lock()
            .read_to_string(&mut s)
            .context("reading the message from standard input")?;
        return turn(s.trim_end_matches(['\n', '\r']));
    }
    if let Some(p) = &args.prompt {
        turn(p)?;
    }
    eprintln!("(an empty line or end of input ends the conversation)");
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        let Some(line) = lines.next().transpose()? else {
            break;
        };
        if line.trim().is_empty() {
            break;
        }
        turn(&line)?;
    }
    Ok(())
}

/// A model error that names a setting, spelled with the flag that sets it.
fn with_flags(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<ModelError>() {
        Ok(ModelError::ContextTooLong {
            prompt,
            max_tokens,
            positions,
            limit,
        }) => anyhow::anyhow!(
            "the prompt ({prompt} tokens) plus --max-tokens ({max_tokens}) make {positions} \
             positions, more than the model's max_position_embeddings ({limit})"
        ),
        Ok(e) => e.into(),
        Err(e) => e,
    }
}
