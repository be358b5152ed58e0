//! A generation the caller drives token by token: a sampler, a token budget and the ids that end
//! it (a tokenizer's end-of-sequence ids), kept across prompts (the turns of a chat).

use crate::generate::{generate, Sampler, Stats};
use crate::{Model, ModelError};

/// Generates after prompts with one sampler, stopping at `max_tokens`, at a stop id (which is
/// not passed on) or when the caller's sink fails.
///
/// ```
/// use tquant_model::generate::Sampler;
/// use tquant_model::{Generation, Model, Options};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny-lite");
/// let model = Model::open(dir.as_ref(), Options::default())?;
/// // Greedy, at most 16 tokens, ending at a newline (the byte vocabulary's id 10).
/// let mut generation = Generation::new(&model, Sampler::new(0.0, 0), 16).stop_at(&[10]);
/// let mut ids = Vec::new();
/// let stats = generation.run(&b"fn main() {".map(u32::from), |id| {
///     ids.push(id);
///     Ok::<_, tquant_model::ModelError>(())
/// })?;
/// assert!(!ids.contains(&10) && ids.len() <= 16);
/// assert!(stats.generated_tokens >= ids.len());
/// eprintln!("{}", generation.speeds(&stats));
/// # Ok::<(), tquant_model::ModelError>(())
/// ```
#[derive(Debug)]
pub struct Generation<'m> {
    model: &'m Model,
    sampler: Sampler,
    max_tokens: usize,
    stop: Vec<u32>,
}

impl<'m> Generation<'m> {
    /// Up to `max_tokens` per prompt, picked by `sampler`.
    pub fn new(model: &'m Model, sampler: Sampler, max_tokens: usize) -> Self {
        Self {
            model,
            sampler,
            max_tokens,
            stop: Vec::new(),
        }
    }

    /// This generation, ending where it picks one of `ids`.
    pub fn stop_at(mut self, ids: &[u32]) -> Self {
        self.stop = ids.to_vec();
        self
    }

    /// Generates after `prompt`, giving each new token to `sink` as it comes (a stop id ends
    /// the generation without reaching it). The first error of `sink` ends the generation and
    /// is returned. The timing counts every token picked, a stop id too.
    pub fn run<E: From<ModelError>>(
        &mut self,
        prompt: &[u32],
        mut sink: impl FnMut(u32) -> Result<(), E>,
    ) -> Result<Stats, E> {
        let stop = &self.stop;
        let mut failed = None;
        let (_, stats) = generate(
            self.model,
            prompt,
            self.max_tokens,
            &mut self.sampler,
            |t| {
                if stop.contains(&t) {
                    return false;
                }
                match sink(t) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            },
        )?;
        match failed {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// One line on the speeds of a run: prefill and decode tokens per second, and the threads.
    pub fn speeds(&self, stats: &Stats) -> String {
        format!(
            "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({} threads)",
            stats.prompt_tokens,
            stats.prefill_tokens_per_second(),
            stats.generated_tokens,
            stats.decode_tokens_per_second(),
            self.model.threads()
        )
    }
}
