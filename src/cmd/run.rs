//! `tquant run`: generate from a prompt (text through the model's tokenizer or byte vocabulary,
//! a chat through its chat template, or token ids), streaming the output; speeds go to stderr.

use super::model_args::ModelArgs;
use super::text_input;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Read, Write};
use tquant_model::generate::{generate, Sampler, Stats};
use tquant_model::{Model, ModelError};
use tquant_text::{ChatTemplate, Message, Vocabulary};

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
    let mut sampler = Sampler::with_filters(args.temperature, args.top_k, args.top_p, args.seed)?;
    if let Some(prompt) = &args.prompt_tokens {
        return run_ids(&args, &model, prompt, &mut sampler);
    }
    let vocab = text_input::vocabulary(
        &args.model.model,
        model.config().vocab_size,
        "--prompt-tokens",
    )?;
    if args.chat {
        return chat(&args, &model, &vocab, &mut sampler);
    }
    let Some(prompt) = &args.prompt else {
        bail!("give --prompt, --prompt-tokens or --chat");
    };
    let ids = vocab.encode(prompt, true).context("tokenizing --prompt")?;
    answer(&args, &model, &vocab, &ids, &mut sampler)?;
    Ok(())
}

/// Generates after `ids`, streaming the text to stdout; returns the text.
fn answer(
    args: &Args,
    model: &Model,
    vocab: &Vocabulary,
    ids: &[u32],
    sampler: &mut Sampler,
) -> Result<String> {
    let stop = if args.ignore_eos {
        &[][..]
    } else {
        vocab.eos_ids()
    };
    let mut stream = vocab.stream();
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    let mut failed = None;
    let (_, stats) = generate(model, ids, args.max_tokens, sampler, |t| {
        if stop.contains(&t) {
            return false;
        }
        let r = stream
            .push(t)
            .map_err(anyhow::Error::from)
            .and_then(|piece| {
                out.write_all(piece.as_bytes())?;
                text.push_str(&piece);
                Ok(out.flush()?)
            });
        match r {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })
    .map_err(with_flags)?;
    if let Some(e) = failed {
        return Err(e.context("writing the output"));
    }
    let rest = stream.flush()?;
    text.push_str(&rest);
    writeln!(out, "{rest}")?;
    report(&stats, model);
    Ok(text)
}

/// Ids in, ids out (comma-separated, as --prompt-tokens takes them).
fn run_ids(args: &Args, model: &Model, prompt: &[u32], sampler: &mut Sampler) -> Result<()> {
    // A tokenizer beside the model, where there is one, says which id ends a generation.
    let dir = &args.model.model;
    let stop = if dir.join("tokenizer.json").is_file() && !args.ignore_eos {
        text_input::vocabulary(dir, model.config().vocab_size, "--prompt-tokens")?
            .eos_ids()
            .to_vec()
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let mut first = true;
    let (_, stats) = generate(model, prompt, args.max_tokens, sampler, |t| {
        if stop.contains(&t) {
            return false;
        }
        let sep = if std::mem::take(&mut first) { "" } else { "," };
        match write!(out, "{sep}{t}").and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                io_err = Some(e);
                false
            }
        }
    })
    .map_err(with_flags)?;
    if let Some(e) = io_err {
        return Err(e).context("writing the output");
    }
    writeln!(out)?;
    report(&stats, model);
    Ok(())
}

fn report(stats: &Stats, model: &Model) {
    eprintln!(
        "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({} threads)",
        stats.prompt_tokens,
        stats.prefill_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_tokens_per_second(),
        model.threads()
    );
}

fn template<'a>(args: &Args, vocab: &'a Vocabulary) -> Result<&'a ChatTemplate> {
    let dir = args.model.model.display();
    let Some(t) = vocab.tokenizer() else {
        bail!("--chat needs a tokenizer.json with a chat_template in its tokenizer_config.json beside {dir}");
    };
    t.chat_template()
        .with_context(|| format!("--chat: {dir} has no chat_template in tokenizer_config.json"))
}

/// One answer per user message; the whole conversation is the prompt of each answer.
fn chat(args: &Args, model: &Model, vocab: &Vocabulary, sampler: &mut Sampler) -> Result<()> {
    let template = template(args, vocab)?;
    let mut messages: Vec<Message> = args
        .system
        .iter()
        .map(|s| Message::new("system", s))
        .collect();
    let turn = |messages: &mut Vec<Message>, user: String, sampler: &mut Sampler| {
        messages.push(Message::new("user", &user));
        let prompt = template.render(messages, true)?;
        // The template writes BOS itself.
        let ids = vocab.encode(&prompt, false)?;
        let text = answer(args, model, vocab, &ids, sampler)?;
        messages.push(Message::new("assistant", &text));
        anyhow::Ok(())
    };
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let user = match &args.prompt {
            Some(p) => p.clone(),
            None => {
                let mut s = String::new();
                stdin
                    .lock()
                    .read_to_string(&mut s)
                    .context("reading the message from standard input")?;
                s.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        return turn(&mut messages, user, sampler);
    }
    if let Some(p) = &args.prompt {
        turn(&mut messages, p.clone(), sampler)?;
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
        turn(&mut messages, line, sampler)?;
    }
    Ok(())
}

/// The library's error, naming the option that sets what it refers to.
fn with_flags(e: ModelError) -> anyhow::Error {
    match e {
        ModelError::ContextTooLong {
            prompt,
            max_tokens,
            positions,
            limit,
        } => anyhow::anyhow!(
            "the prompt ({prompt} tokens) plus --max-tokens ({max_tokens}) make {positions} \
             positions, more than the model's max_position_embeddings ({limit})"
        ),
        e => e.into(),
    }
}
