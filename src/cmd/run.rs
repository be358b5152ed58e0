//! `tquant run`: generate from a prompt, streaming the text; speeds go to stderr.

use super::model_args::ModelArgs;
use anyhow::{bail, Context, Result};
use std::io::Write;
use tquant_model::generate::{generate, Sampler};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Prompt text (byte-vocabulary models: each byte is a token).
    #[arg(long, required_unless_present = "prompt_tokens")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids (any vocabulary); the output is ids too.
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    pub prompt_tokens: Option<Vec<u32>>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.model.open()?;
    let bytes = model.config().vocab_size == 256;
    let prompt: Vec<u32> = match (&args.prompt, &args.prompt_tokens) {
        (Some(p), _) if bytes => p.bytes().map(u32::from).collect(),
        (Some(_), _) => bail!(
            "this model's vocabulary has {} tokens, not bytes: give --prompt-tokens",
            model.config().vocab_size
        ),
        (None, Some(t)) => t.clone(),
        (None, None) => bail!("give --prompt or --prompt-tokens"),
    };
    let mut sampler = Sampler::new(args.temperature, args.seed);
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let (_, stats) = generate(&model, &prompt, args.max_tokens, &mut sampler, |t| {
        let r = if bytes {
            out.write_all(&[t as u8])
        } else {
            write!(out, "{t} ")
        };
        match r.and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                io_err = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).context("writing the output");
    }
    writeln!(out)?;
    eprintln!(
        "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({} threads)",
        stats.prompt_tokens,
        stats.prefill_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_tokens_per_second(),
        model.threads()
    );
    Ok(())
}
