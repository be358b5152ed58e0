//! Token generation: one prefill of the prompt, then one decode step per new token over the
//! compressed KV cache. Greedy by default, or seeded sampling with temperature, top-k and top-p.

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
    Temperature {
        /// Divides the logits.
        temperature: f32,
        /// The random source.
        rng: Rng,
    },
    /// Sampled from `softmax(logits / temperature)` cut to the `top_k` most likely tokens
    /// (0: all), then to the fewest most likely whose probabilities add up to `top_p` (1: all),
    /// as transformers' `TopKLogitsWarper` and `TopPLogitsWarper` do.
    Filtered {
        /// Divides the logits.
        temperature: f32,
        /// Tokens kept (0: all).
        top_k: usize,
        /// Probability mass kept (1: all).
        top_p: f32,
        /// The random source.
        rng: Rng,
    },
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

    /// Greedy for `temperature <= 0`; otherwise seeded sampling, cut to `top_k` tokens (0: no
    /// cut) and the `top_p` nucleus (1: no cut).
    pub fn with_filters(
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ModelError::TopP { top_p });
        }
        if !temperature.is_finite() {
            return Err(ModelError::Temperature { temperature });
        }
        if temperature <= 0.0 {
            return Ok(Self::Greedy);
        }
        if top_k == 0 && top_p >= 1.0 {
            return Ok(Self::new(temperature, seed));
        }
        Ok(Self::Filtered {
            temperature,
            top_k,
            top_p,
            rng: Rng::new(seed),
        })
    }

    /// The next token for `logits` (one row of the vocabulary).
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        match self {
            Self::Greedy => argmax(logits) as u32,
            Self::Filtered {
                temperature,
                top_k,
                top_p,
                rng,
            } => pick_filtered(logits, *temperature, *top_k, *top_p, rng),
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

/// Sampling from the top-k tokens, then the top-p nucleus of those; ties in order of id.
fn pick_filtered(logits: &[f32], temperature: f32, top_k: usize, top_p: f32, rng: &mut Rng) -> u32 {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let k = if top_k == 0 {
        order.len()
    } else {
        top_k.min(order.len())
    };
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_logit);
        order.truncate(k);
    }
    order.sort_unstable_by(by_logit);
    let m = logits[order[0] as usize];
    let mut w: Vec<f64> = order
        .iter()
        .map(|&i| (((logits[i as usize] - m) / temperature) as f64).exp())
        .collect();
    if top_p < 1.0 {
        // Keep tokens while the probability mass before them is below top_p (at least one).
        let total: f64 = w.iter().sum();
        let mut before = 0.0;
        let keep = w
            .iter()
            .take_while(|&&x| {
                let keep = before < top_p as f64 * total;
                before += x;
                keep
            })
            .count()
            .max(1);
        w.truncate(keep);
    }
    let mut u = rng.uniform() * w.iter().sum::<f64>();
    for (&i, &x) in order.iter().zip(&w) {
        if u < x {
            return i;
        }
        u -= x;
    }
    order[0]
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
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds of the prompt's forward pass.
    pub prefill_seconds: f64,
    /// Seconds of the generated tokens' passes.
    pub decode_seconds: f64,
}

impl Stats {
    /// Prompt tokens per second of prefill.
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
        return Err(ModelError::EmptyPrompt);
    }
    check_context(model, prompt.len(), max_tokens)?;
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

/// Refuses a generation that would run past the model's `max_position_embeddings`.
pub fn check_context(model: &Model, prompt: usize, max_tokens: usize) -> Result<(), ModelError> {
    let limit = model.config().max_position_embeddings;
    if prompt + max_tokens > limit {
        return Err(ModelError::ContextTooLong {
            prompt,
            max_tokens,
            positions: prompt + max_tokens,
            limit,
        });
    }
    Ok(())
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
        return Err(ModelError::SelfCalibrationSize { total, window });
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

    fn frequencies(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<f64> {
        let mut f = vec![0.0; logits.len()];
        for _ in 0..n {
            f[s.pick(logits) as usize] += 1.0 / n as f64;
        }
        f
    }

    #[test]
    fn top_k_and_top_p_cut_the_distribution() {
        // Probabilities 0.4, 0.3, 0.2, 0.1 (ids 3, 0, 2, 1).
        let logits = [0.3f32.ln(), 0.1f32.ln(), 0.2f32.ln(), 0.4f32.ln()];
        let f = frequencies(
            &mut Sampler::with_filters(1.0, 2, 1.0, 5).unwrap(),
            &logits,
            6000,
        );
        assert_eq!((f[1], f[2]), (0.0, 0.0), "{f:?}");
        assert!((f[3] - 4.0 / 7.0).abs() < 0.03, "{f:?}");
        // top-p 0.75: 0.4 + 0.3 < 0.75, so 0.2 joins; 0.1 does not.
        let f = frequencies(
            &mut Sampler::with_filters(1.0, 0, 0.75, 5).unwrap(),
            &logits,
            6000,
        );
        assert_eq!(f[1], 0.0, "{f:?}");
        assert!((f[2] - 2.0 / 9.0).abs() < 0.03, "{f:?}");
        // top-p 0.65 is reached by 0.4 + 0.3; a tiny top-p keeps the most likely token.
        let f = frequencies(
            &mut Sampler::with_filters(1.0, 0, 0.65, 5).unwrap(),
            &logits,
            2000,
        );
        assert_eq!((f[1], f[2]), (0.0, 0.0), "{f:?}");
        let f = frequencies(
            &mut Sampler::with_filters(1.0, 0, 1e-6, 5).unwrap(),
            &logits,
            100,
        );
        assert!((f[3] - 1.0).abs() < 1e-9, "{f:?}");
        // Both: top-k 3 then top-p 0.5 of the renormalized 0.4/0.9, 0.3/0.9.
        let f = frequencies(
            &mut Sampler::with_filters(1.0, 3, 0.5, 5).unwrap(),
            &logits,
            4000,
        );
        assert_eq!((f[1], f[2]), (0.0, 0.0), "{f:?}");
        assert!((f[3] - 4.0 / 7.0).abs() < 0.03, "{f:?}");
        let seq = |seed| {
            let mut s = Sampler::with_filters(0.8, 3, 0.9, seed).unwrap();
            (0..64).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(seq(9), seq(9));
        assert_ne!(seq(9), seq(10));
        assert!(Sampler::with_filters(1.0, 0, 0.0, 1).is_err());
        assert!(Sampler::with_filters(1.0, 0, 1.5, 1).is_err());
        assert!(matches!(
            Sampler::with_filters(0.0, 5, 0.5, 1).unwrap(),
            Sampler::Greedy
        ));
    }
}
