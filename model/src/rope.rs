//! The decoupled rotary embedding: interleaved (GPT-J) pairs `(x[2i], x[2i+1])` rotated by
//! `pos * inv_freq[i]`, with default, linear or YaRN frequencies and YaRN's cos/sin factor.
//!
//! Frequencies follow transformers' `_compute_yarn_parameters` (the same arithmetic as DeepSeek's
//! `DeepseekV2YarnRotaryEmbedding`), rounded to f32 as torch computes them.

use crate::config::{RopeConfig, RopeScaling};

/// Rope tables for one model.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Multiplies cos and sin (YaRN's `attention_factor`; 1 otherwise).
    factor: f32,
}

impl Rope {
    /// Rope over `dim` values (the qk_rope_head_dim, even).
    pub fn new(cfg: &RopeConfig, dim: usize) -> Self {
        let half = dim / 2;
        let theta = cfg.theta;
        // torch: base ** (arange(0, dim, 2).float() / dim), in f32
        let pos_freq: Vec<f64> = (0..half)
            .map(|i| (theta as f32).powf((2 * i) as f32 / dim as f32) as f64)
            .collect();
        let (inv_freq, factor) = match &cfg.scaling {
            RopeScaling::None => (pos_freq.iter().map(|p| (1.0 / p) as f32).collect(), 1.0),
            RopeScaling::Linear { factor } => (
                pos_freq.iter().map(|p| (1.0 / p / factor) as f32).collect(),
                1.0,
            ),
            RopeScaling::Yarn(y) => {
                let corr = |rot: f64| {
                    dim as f64
                        * (y.original_max_position_embeddings / (rot * 2.0 * std::f64::consts::PI))
                            .ln()
                        / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (corr(y.beta_fast), corr(y.beta_slow));
                if y.truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let mut high = high.min(dim as f64 - 1.0);
                if low == high {
                    high += 0.001;
                }
                let inv = pos_freq
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        let inter = 1.0 / (y.factor * p);
                        let extra = 1.0 / p;
                        (inter * (1.0 - extrapolation) + extra * extrapolation) as f32
                    })
                    .collect();
                (inv, y.rope_factor() as f32)
            }
        };
        Self { inv_freq, factor }
    }

    /// The inverse frequencies, one per pair.
    #[cfg(test)]
    pub(crate) fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Fills `cs` (len = dim) with `[cos_0, sin_0, cos_1, sin_1, ...]` for position `pos`.
    pub fn cos_sin(&self, pos: usize, cs: &mut [f32]) {
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = (pos as f32 * f) as f64;
            cs[2 * i] = angle.cos() as f32 * self.factor;
            cs[2 * i + 1] = angle.sin() as f32 * self.factor;
        }
    }

    /// Rotates `x` (len = dim) in place with the table of [`Rope::cos_sin`].
    #[inline]
    pub fn apply(cs: &[f32], x: &mut [f32]) {
        for (pair, c) in x.chunks_exact_mut(2).zip(cs.chunks_exact(2)) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c[0] - b * c[1];
            pair[1] = a * c[1] + b * c[0];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Yarn;

    fn v2_yarn() -> RopeConfig {
        RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Yarn(Yarn {
                factor: 40.0,
                original_max_position_embeddings: 4096.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: Some(0.707),
                mscale_all_dim: Some(0.707),
                attention_factor: None,
                truncate: true,
            }),
        }
    }

    #[test]
    fn yarn_keeps_low_dims_and_divides_high_dims_by_factor() {
        // reference/deepseek.md 3.3: for R = 64 the ramp runs from i = 10 to i = 23.
        let y = Rope::new(&v2_yarn(), 64);
        let d = Rope::new(
            &RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            64,
        );
        for i in 0..32 {
            let r = y.inv_freq()[i] / d.inv_freq()[i];
            if i <= 10 {
                assert!((r - 1.0).abs() < 1e-6, "{i} {r}");
            } else if i >= 23 {
                assert!((r - 1.0 / 40.0).abs() < 1e-6, "{i} {r}");
            } else {
                assert!(r < 1.0 && r > 1.0 / 40.0, "{i} {r}");
            }
        }
        assert_eq!(y.factor, 1.0);
    }

    #[test]
    fn rotation_preserves_norm_and_pairs_are_interleaved() {
        let rope = Rope::new(
            &RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            4,
        );
        let mut cs = [0.0; 4];
        rope.cos_sin(3, &mut cs);
        let mut x = [1.0, 0.0, 0.0, 2.0];
        Rope::apply(&cs, &mut x);
        // pair 0 rotates by 3 rad, pair 1 by 3 * 10000^-0.5 rad
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        let a = 3.0f32 * 0.01;
        assert!((x[2] + 2.0 * a.sin()).abs() < 1e-6 && (x[3] - 2.0 * a.cos()).abs() < 1e-6);
    }
}
