//! Token generation: one prefill of the prompt, then one decode step per new token over the
//! compressed KV cache. Greedy by default, or temperature sampling with a seed.

use crate::model::{Logits, Model};
use crate::ModelError;
use rayon::prelude::*;
use std::time::Instant;
use tquant_formats::sample::Rng;

/// How the next token is picked.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// The most likely token (the lowest id among ties).
    Greedy,
    /// Sampled from `softmax(logits / temperature)`.
    Temperature { temperature: f32, rng: Rng },
}

impl Sampler {
    /// Greedy for `temperature <= 0`, otherwise seeded sampling.
    pub fn new(temperature: f32, seed: u64) -> Self {
        if temperature > 0.0 {
            Self::Temperature {
                temperature,
                rng: Rng::new(seed),
            }
        } else {
            Self::Greedy
        }
    }

    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        match self {
            Self::Greedy => argmax(logits) as u32,
            Self::Temperature { temperature, rng } => {
                let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let w: Vec<f64> = logits
                    .iter()
                    .map(|&l| (((l - m) / *temperature) as f64).exp())
                    .collect();
                let mut u = rng.uniform() * w.iter().sum::<f64>();
                for (i, &x) in w.iter().enumerate() {
                    if u < x {
                        return i as u32;
                    }
                    u -= x;
                }
                argmax(logits) as u32
            }
        }
    }
}

/// Index of the largest value (first among ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Timing of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl Stats {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-12)
    }

    /// Decode steps per second (the first generated token comes from the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-12)
    }
}

/// Generates up to `max_tokens` after `prompt`; `on_token` sees each new token as it comes and
/// returns `false` to stop. Returns the new tokens and the timing.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, Stats), ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::Input("the prompt is empty".into()));
    }
    let mut stats = Stats {
        prompt_tokens: prompt.len(),
        ..Stats::default()
    };
    let mut out = Vec::with_capacity(max_tokens);
    if max_tokens == 0 {
        return Ok((out, stats));
    }
    let mut cache = model.new_cache();
    let t0 = Instant::now();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last)?;
    stats.prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    loop {
        let tok = sampler.pick(&logits);
        out.push(tok);
        if !on_token(tok) || out.len() == max_tokens {
            break;
        }
        logits = model.forward(&[tok], &mut cache, Logits::Last)?;
    }
    stats.decode_seconds = t1.elapsed().as_secs_f64();
    stats.generated_tokens = out.len();
    Ok((out, stats))
}

/// Calibration text the model writes itself, for calibration without calibration data: `total`
/// tokens in sequences of `window`, each starting from a token drawn uniformly from the
/// vocabulary and continued by sampling at temperature 1 (the model's own distribution). Each
/// sequence has its own seed (from `seed` and its index), so the tokens do not depend on the
/// thread count; sequences run in parallel on the model's threads.
pub fn self_calibration_tokens(
    model: &Model,
    total: usize,
    window: usize,
    seed: u64,
) -> Result<Vec<u32>, ModelError> {
    if total == 0 || window == 0 {
        return Err(ModelError::Input(format!(
            "self-calibration needs at least one token in sequences of at least one \
             (asked for {total} in sequences of {window})"
        )));
    }
    let vocab = model.config().vocab_size as u64;
    let sequences = total.div_ceil(window);
    let run = |i: usize| -> Result<Vec<u32>, ModelError> {
        let len = window.min(total - i * window);
        let mut rng = Rng::new(seed.wrapping_add((i as u64).wrapping_mul(0xd134_2543_de82_ef95)));
        let first = rng.below(vocab) as u32;
        let mut sampler = Sampler::Temperature {
            temperature: 1.0,
            rng,
        };
        let (rest, _) = generate(model, &[first], len - 1, &mut sampler, |_| true)?;
        Ok(std::iter::once(first).chain(rest).collect())
    };
    let all = model.install(|| {
        (0..sequences)
            .into_par_iter()
            .map(run)
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(all.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_first_maximum() {
        assert_eq!(Sampler::new(0.0, 1).pick(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut a = Sampler::new(1.0, 7);
        let mut b = Sampler::new(1.0, 7);
        let picks: Vec<u32> = (0..4000).map(|_| a.pick(&logits)).collect();
        assert!(picks
            .iter()
            .zip((0..4000).map(|_| b.pick(&logits)))
            .all(|(x, y)| *x == y));
        assert!(!picks.contains(&2));
        let ones = picks.iter().filter(|&&p| p == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
    }
}
