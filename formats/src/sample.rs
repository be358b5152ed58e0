//! A small seeded random source for tests, benches and synthetic data: xoshiro256++ with normal
//! and Student-t samplers. Deterministic across platforms for a given seed.

/// xoshiro256++ (Blackman and Vigna), seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

impl Rng {
    /// A generator seeded with `seed` (the same seed gives the same sequence).
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
            spare_normal: None,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Marsaglia's polar method).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let m = (-2.0 * s.ln() / s).sqrt();
                self.spare_normal = Some(v * m);
                return u * m;
            }
        }
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 boosted by U^(1/shape)).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Standard Student-t with `nu` degrees of freedom: `Z / sqrt(chi2(nu) / nu)`.
    pub fn student_t(&mut self, nu: f64) -> f64 {
        let z = self.normal();
        let chi2 = 2.0 * self.gamma(nu / 2.0);
        z / (chi2 / nu).sqrt()
    }

    /// `n` standard normal samples as f32.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }

    /// `n` Student-t samples as f32.
    pub fn student_t_vec(&mut self, n: usize, nu: f64) -> Vec<f32> {
        (0..n).map(|_| self.student_t(nu) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_and_t_have_the_right_variance() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let var = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let z = r.normal_vec(n);
        assert!((var(&z) - 1.0).abs() < 0.02, "normal variance {}", var(&z));
        let t = r.student_t_vec(n, 10.0);
        // Var t(nu) = nu / (nu - 2) = 1.25.
        assert!((var(&t) - 1.25).abs() < 0.05, "t(10) variance {}", var(&t));
    }

    #[test]
    fn same_seed_same_stream() {
        assert_eq!(Rng::new(3).normal_vec(10), Rng::new(3).normal_vec(10));
        assert_ne!(Rng::new(3).normal_vec(10), Rng::new(4).normal_vec(10));
    }
}
