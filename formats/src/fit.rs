//! Maximum-likelihood fit of a location-scale Student-t distribution, `x = loc + scale * T(nu)`.
//!
//! For a fixed `nu`, the location and scale come from the PX-EM iteration (Liu, Rubin and Wu
//! 1998: the EM algorithm of the t as a normal scale mixture, with the scale update divided by the
//! sum of the weights, which converges much faster than plain EM and to the same maximum). The
//! profile log-likelihood of `nu` is then maximised by a grid over `ln nu` followed by
//! Brent's method, each EM warm-started from the nearest point already solved.
//!
//! `nu` is clamped to [`NU_MIN`, `NU_MAX`]. Near-normal data often has no finite maximum in `nu`
//! (the likelihood keeps rising towards the normal); such fits return `nu = NU_MAX`, which
//! [`TFit::is_normal`] reports and which callers treat as "normal".

use crate::sample::Rng;
use statrs::function::gamma::ln_gamma;
use std::borrow::Cow;

/// Smallest `nu` the fit returns. Below it the t has no mean (nu <= 1 already) and, with many
/// repeated values, the likelihood becomes unbounded; real weights stay above it.
pub const NU_MIN: f64 = 0.5;
/// Largest `nu` the fit returns. At 1000 the t is the normal for every practical purpose (excess
/// kurtosis 6/(nu - 4) = 0.006; an SF4 table built from it is within 2e-3 of NF4's values), so a
/// fit at this bound means "normal".
pub const NU_MAX: f64 = 1000.0;
/// Inputs longer than this are fitted on a deterministic, stratified subsample of this size:
/// the fit's precision is then far below the sampling noise of `nu` across tensors.
pub const FIT_MAX_SAMPLES: usize = 1 << 20;
/// Seed of the subsample, fixed so that the same tensor always gives the same fit.
const SUBSAMPLE_SEED: u64 = 0x7446_6974; // "tFit"
/// Scale floor, relative to the data's spread. Data where a third or more of the values are
/// identical (pruned weights) has an unbounded likelihood as `scale -> 0` at small `nu`; the
/// floor keeps the fit finite there (it then returns `nu = NU_MIN` and a tiny scale).
const SCALE_FLOOR: f64 = 1e-6;

/// Parameters of a fitted location-scale Student-t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TFit {
    /// Degrees of freedom, in [`NU_MIN`, `NU_MAX`].
    pub nu: f64,
    /// Location (centre).
    pub loc: f64,
    /// Zero only for the degenerate fallbacks (empty or constant input).
    pub scale: f64,
}

impl TFit {
    /// True when the fit reached [`NU_MAX`]: the data is as good as normal.
    pub fn is_normal(&self) -> bool {
        self.nu >= NU_MAX
    }

    /// Log-likelihood of the finite values of `x` under this distribution (f64 sums).
    /// Minus infinity when `scale` is not positive.
    pub fn log_likelihood(&self, x: &[f32]) -> f64 {
        if self.scale.is_nan() || self.scale <= 0.0 {
            return f64::NEG_INFINITY;
        }
        let inv = 1.0 / self.scale;
        let mut n = 0usize;
        let mut sum_log = 0.0f64;
        for &v in x.iter().filter(|v| v.is_finite()) {
            let z = (v as f64 - self.loc) * inv;
            sum_log += (z * z / self.nu).ln_1p();
            n += 1;
        }
        n as f64 * (log_norm_const(self.nu) - self.scale.ln()) - 0.5 * (self.nu + 1.0) * sum_log
    }
}

/// `ln` of the standard t density's constant: `lnG((nu+1)/2) - lnG(nu/2) - ln(nu pi)/2`.
fn log_norm_const(nu: f64) -> f64 {
    ln_gamma(0.5 * (nu + 1.0)) - ln_gamma(0.5 * nu) - 0.5 * (nu * std::f64::consts::PI).ln()
}

/// Maximum-likelihood Student-t fit of the finite values of `x` (NaN and infinities are ignored).
///
/// Never panics. Fallbacks: no finite value gives `{nu: NU_MAX, loc: 0, scale: 0}`; a constant
/// input (or a single value) gives `{nu: NU_MAX, loc: that value, scale: 0}`. More than
/// [`FIT_MAX_SAMPLES`] values are subsampled deterministically.
pub fn fit_student_t(x: &[f32]) -> TFit {
    let finite = x.iter().filter(|v| v.is_finite()).count();
    let values: Vec<f64> = if finite <= FIT_MAX_SAMPLES {
        x.iter()
            .filter(|v| v.is_finite())
            .map(|&v| v as f64)
            .collect()
    } else if finite == x.len() {
        stratified_indices(x.len(), FIT_MAX_SAMPLES, SUBSAMPLE_SEED)
            .map(|i| x[i] as f64)
            .collect()
    } else {
        let finite_values: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
        stratified_indices(finite_values.len(), FIT_MAX_SAMPLES, SUBSAMPLE_SEED)
            .map(|i| finite_values[i] as f64)
            .collect()
    };
    fit_f64(values)
}

/// Student-t fit of block-standardised values: `x` is cut into consecutive blocks of `block`
/// elements (the last one may be shorter; `block == 0` means one block), each block has its mean
/// subtracted and is divided by its standard deviation, and the pooled values are fitted.
///
/// This is the `nu` a per-block absmax codebook should be built for: block scaling already removes
/// the differences between blocks, which is where most of a tensor's heavy tail comes from.
/// Blocks with fewer than two finite values or zero spread carry no shape and are skipped; if no
/// block is left the fallback of [`fit_student_t`] for an empty input is returned. Long inputs
/// are subsampled by whole blocks to about [`FIT_MAX_SAMPLES`] values.
pub fn fit_block_standardized(x: &[f32], block: usize) -> TFit {
    let block = if block == 0 { x.len().max(1) } else { block };
    let n_blocks = x.len().div_ceil(block);
    let keep = FIT_MAX_SAMPLES.div_ceil(block).max(1);
    if n_blocks <= keep {
        fit_f64(standardized_blocks(x, block, 0..n_blocks))
    } else {
        fit_f64(standardized_blocks(
            x,
            block,
            stratified_indices(n_blocks, keep, SUBSAMPLE_SEED),
        ))
    }
}

/// The pooled block-standardised values (see [`fit_block_standardized`]) of the blocks listed.
fn standardized_blocks(x: &[f32], block: usize, blocks: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut values = Vec::new();
    let mut scratch = Vec::with_capacity(block);
    for b in blocks {
        let chunk = &x[b * block..((b + 1) * block).min(x.len())];
        scratch.clear();
        scratch.extend(chunk.iter().filter(|v| v.is_finite()).map(|&v| v as f64));
        if scratch.len() < 2 {
            continue;
        }
        let n = scratch.len() as f64;
        let mean = scratch.iter().sum::<f64>() / n;
        let var = scratch.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let sd = var.sqrt();
        if sd > 0.0 && sd.is_finite() {
            values.extend(scratch.iter().map(|v| (v - mean) / sd));
        }
    }
    values
}

/// Values the converter's fits see by default (whole blocks; see [`FitSampling`]). The
/// measurements behind the figure are in `docs/fit.md`: at this size the fitted `nu` of real and
/// synthetic weight matrices is within a few percent of the fit on every value.
pub const FIT_SAMPLE_VALUES: usize = 1 << 14;

/// Which values of a tensor a fit sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitSampling {
    /// Every finite value, however many (no subsampling at all).
    Full,
    /// About `values` values in whole blocks, spread over the whole tensor: the blocks are cut
    /// into `values / block` equal strata and one block is drawn from each by a generator seeded
    /// with `seed`. A fixed seed makes the sample a function of the tensor alone.
    Blocks {
        /// Values to sample, about.
        values: usize,
        /// Seed of the block draw.
        seed: u64,
    },
}

impl FitSampling {
    /// [`FIT_SAMPLE_VALUES`] values with the fixed seed the converter uses.
    pub const DEFAULT: Self = Self::Blocks {
        values: FIT_SAMPLE_VALUES,
        seed: SUBSAMPLE_SEED,
    };
}

impl Default for FitSampling {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The whole blocks of `x` (`block` elements, `block == 0` meaning one block) a fit under
/// `sampling` sees, concatenated; `x` itself when the sample would cover every block.
pub fn sample_blocks(x: &[f32], block: usize, sampling: FitSampling) -> Cow<'_, [f32]> {
    let block = if block == 0 { x.len().max(1) } else { block };
    let n_blocks = x.len().div_ceil(block);
    let FitSampling::Blocks { values, seed } = sampling else {
        return Cow::Borrowed(x);
    };
    let keep = (values / block).max(1);
    if n_blocks <= keep {
        return Cow::Borrowed(x);
    }
    let mut out = Vec::with_capacity(keep * block);
    for b in stratified_indices(n_blocks, keep, seed) {
        out.extend_from_slice(&x[b * block..((b + 1) * block).min(x.len())]);
    }
    Cow::Owned(out)
}

/// [`fit_block_standardized`] on the sample `sampling` takes ([`FitSampling::Full`]: on every
/// block, even past [`FIT_MAX_SAMPLES`] values).
pub fn fit_block_standardized_with(x: &[f32], block: usize, sampling: FitSampling) -> TFit {
    let block = if block == 0 { x.len().max(1) } else { block };
    let sample = sample_blocks(x, block, sampling);
    fit_f64(standardized_blocks(
        &sample,
        block,
        0..sample.len().div_ceil(block),
    ))
}

/// [`fit_student_t`] on the whole blocks (`block` elements) that `sampling` takes
/// ([`FitSampling::Full`]: on every finite value, even past [`FIT_MAX_SAMPLES`]).
pub fn fit_student_t_with(x: &[f32], block: usize, sampling: FitSampling) -> TFit {
    let sample = sample_blocks(x, block, sampling);
    fit_f64(
        sample
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| v as f64)
            .collect(),
    )
}

/// `m` indices out of `0..n` (m < n), one drawn uniformly from each of `m` equal strata.
fn stratified_indices(n: usize, m: usize, seed: u64) -> impl Iterator<Item = usize> {
    let mut rng = Rng::new(seed);
    (0..m).map(move |i| {
        let lo = (i as u128 * n as u128 / m as u128) as usize;
        let hi = ((i as u128 + 1) * n as u128 / m as u128) as usize;
        lo + rng.below((hi - lo).max(1) as u64) as usize
    })
}

/// The fit proper, on finite values.
fn fit_f64(mut x: Vec<f64>) -> TFit {
    if x.is_empty() {
        return TFit {
            nu: NU_MAX,
            loc: 0.0,
            scale: 0.0,
        };
    }
    // Work in units of the data's own spread (median and MAD, or the mean and standard deviation
    // when more than half the values coincide), so tolerances are relative and tiny scales
    // lose nothing.
    let (center, unit) = robust_center_and_unit(&x);
    if unit == 0.0 || !unit.is_finite() {
        return TFit {
            nu: NU_MAX,
            loc: x[0],
            scale: 0.0,
        };
    }
    for v in x.iter_mut() {
        *v = (*v - center) / unit;
    }
    let fit = profile_search(&x);
    TFit {
        nu: fit.nu,
        loc: center + unit * fit.loc,
        scale: unit * fit.scale,
    }
}

fn robust_center_and_unit(x: &[f64]) -> (f64, f64) {
    let mut s = x.to_vec();
    let median = median_in_place(&mut s);
    for v in s.iter_mut() {
        *v = (*v - median).abs();
    }
    let mad = median_in_place(&mut s);
    if mad > 0.0 && mad.is_finite() {
        return (median, mad);
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let sd = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    (mean, sd)
}

fn median_in_place(s: &mut [f64]) -> f64 {
    let mid = s.len() / 2;
    let (_, m, _) = s.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

/// A point of the profile likelihood: the best (loc, scale) for one `nu`, and the log-likelihood
/// there (on standardised data).
#[derive(Debug, Clone, Copy)]
struct Profile {
    nu: f64,
    loc: f64,
    scale: f64,
    loglik: f64,
}

const GRID: usize = 9;
/// Brent's search stops when `ln nu` is known to this precision (relative precision of nu).
const LN_NU_TOL: f64 = 1e-5;
const EM_MAX_ITER: usize = 2000;
/// PX-EM stops when a step moves loc and scale by less than this (in units of the scale).
const EM_TOL: f64 = 1e-10;
/// Looser tolerance for the coarse grid, which only has to find the bracket.
const EM_TOL_GRID: f64 = 1e-5;

fn profile_search(x: &[f64]) -> TFit {
    let (u_min, u_max) = (NU_MIN.ln(), NU_MAX.ln());
    let mut grid: Vec<Profile> = Vec::with_capacity(GRID);
    // From heavy to light tails; start at the median (0) and unit scale (MAD ~ 0.67 sigma).
    let (mut loc, mut scale) = (0.0, 1.0);
    for i in 0..GRID {
        let u = u_min + (u_max - u_min) * i as f64 / (GRID - 1) as f64;
        let p = profile(x, u.exp(), loc, scale, EM_TOL_GRID);
        (loc, scale) = (p.loc, p.scale);
        grid.push(p);
    }
    let best = (0..GRID)
        .max_by(|&a, &b| grid[a].loglik.total_cmp(&grid[b].loglik))
        .unwrap_or(0);
    let lo = grid[best.saturating_sub(1)].nu.ln();
    let hi = grid[(best + 1).min(GRID - 1)].nu.ln();
    let mut best_p = grid[best];
    brent_max(lo, hi, best_p.nu.ln(), best_p.loglik, |u| {
        let p = profile(x, u.exp(), best_p.loc, best_p.scale, EM_TOL);
        if p.loglik > best_p.loglik {
            best_p = p;
        }
        p.loglik
    });
    // The search never leaves [NU_MIN, NU_MAX]; pin results within tolerance of a bound to it.
    let u = best_p.nu.ln();
    let nu = if u > u_max - 2.0 * LN_NU_TOL {
        NU_MAX
    } else if u < u_min + 2.0 * LN_NU_TOL {
        NU_MIN
    } else {
        best_p.nu
    };
    let p = if nu == best_p.nu {
        best_p
    } else {
        profile(x, nu, best_p.loc, best_p.scale, EM_TOL)
    };
    TFit {
        nu,
        loc: p.loc,
        scale: p.scale,
    }
}

/// Brent's method (golden section with parabolic steps, as in Numerical Recipes' `brent`)
/// maximising `f` on `[a, b]`, starting from the interior point `x0` with value `f0`. The caller
/// keeps the best point through `f`'s side effects.
fn brent_max(mut a: f64, mut b: f64, x0: f64, f0: f64, mut f: impl FnMut(f64) -> f64) {
    const CGOLD: f64 = 0.381_966_011_250_105;
    let (mut x, mut w, mut v) = (x0, x0, x0);
    let (mut fx, mut fw, mut fv) = (f0, f0, f0);
    let mut d: f64 = 0.0;
    let mut e: f64 = 0.0;
    for _ in 0..100 {
        let xm = 0.5 * (a + b);
        let tol1 = LN_NU_TOL * 0.5;
        let tol2 = 2.0 * tol1;
        if (x - xm).abs() <= tol2 - 0.5 * (b - a) {
            return;
        }
        let mut golden = true;
        if e.abs() > tol1 {
            // Parabola through x, w, v (on -f, a minimisation).
            let r = (x - w) * (fv - fx);
            let mut q = (x - v) * (fw - fx);
            let mut p = (x - v) * q - (x - w) * r;
            q = 2.0 * (q - r);
            if q > 0.0 {
                p = -p;
            }
            q = q.abs();
            if p.abs() < (0.5 * q * e).abs() && p > q * (a - x) && p < q * (b - x) {
                e = d;
                d = p / q;
                let u = x + d;
                if u - a < tol2 || b - u < tol2 {
                    d = tol1.copysign(xm - x);
                }
                golden = false;
            }
        }
        if golden {
            e = if x >= xm { a - x } else { b - x };
            d = CGOLD * e;
        }
        let u = if d.abs() >= tol1 {
            x + d
        } else {
            x + tol1.copysign(d)
        };
        let fu = f(u);
        if fu >= fx {
            if u >= x {
                a = x;
            } else {
                b = x;
            }
            (v, w, x) = (w, x, u);
            (fv, fw, fx) = (fw, fx, fu);
        } else {
            if u < x {
                a = u;
            } else {
                b = u;
            }
            if fu >= fw || w == x {
                (v, w) = (w, u);
                (fv, fw) = (fw, fu);
            } else if fu >= fv || v == x || v == w {
                v = u;
                fv = fu;
            }
        }
    }
}

/// PX-EM for (loc, scale) at fixed `nu`, from a warm start.
fn profile(x: &[f64], nu: f64, mut loc: f64, mut scale: f64, tol: f64) -> Profile {
    let n = x.len() as f64;
    for _ in 0..EM_MAX_ITER {
        let inv_s2 = 1.0 / (scale * scale);
        let (mut sw, mut swx, mut swxx) = (0.0f64, 0.0f64, 0.0f64);
        for &v in x {
            let r = v - loc;
            let w = (nu + 1.0) / (nu + r * r * inv_s2);
            sw += w;
            swx += w * r;
            swxx += w * r * r;
        }
        // Residuals are taken about the old loc, so the update is a shift: no cancellation.
        let shift = swx / sw;
        let new_scale = ((swxx - shift * swx) / sw).max(0.0).sqrt().max(SCALE_FLOOR);
        loc += shift;
        let done = shift.abs() <= tol * new_scale && (new_scale / scale - 1.0).abs() <= tol;
        scale = new_scale;
        if done {
            break;
        }
    }
    let sum_log = sum_ln_1p_z2(x, loc, 1.0 / (scale * scale * nu));
    Profile {
        nu,
        loc,
        scale,
        loglik: n * (log_norm_const(nu) - scale.ln()) - 0.5 * (nu + 1.0) * sum_log,
    }
}

/// `sum ln(1 + c (x - loc)^2)` as the logarithm of a product: the factors are multiplied in four
/// independent lanes, each kept as an f64 mantissa in [1, 2) and an integer exponent, so one
/// logarithm per lane replaces one per element (the fit's most expensive step otherwise). Each
/// factor is below 2^1000 for any f32 input and a scale above the floor, so nothing overflows;
/// the rounding error of the product is ~1e-16 per factor, below the sum's own.
fn sum_ln_1p_z2(x: &[f64], loc: f64, c: f64) -> f64 {
    const EXP_MASK: u64 = 0x7ff << 52;
    const ONE_BITS: u64 = 1023 << 52;
    let mut mant = [1.0f64; 4];
    let mut exp = [0i64; 4];
    let mut lanes = x.chunks_exact(4);
    for chunk in &mut lanes {
        for k in 0..4 {
            let r = chunk[k] - loc;
            let m = mant[k] * (1.0 + c * r * r);
            let bits = m.to_bits();
            exp[k] += ((bits & EXP_MASK) >> 52) as i64 - 1023;
            mant[k] = f64::from_bits((bits & !EXP_MASK) | ONE_BITS);
        }
    }
    let tail: f64 = lanes
        .remainder()
        .iter()
        .map(|&v| (c * (v - loc) * (v - loc)).ln_1p())
        .sum();
    let lanes: f64 = (0..4)
        .map(|k| mant[k].ln() + exp[k] as f64 * std::f64::consts::LN_2)
        .sum();
    lanes + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_product_equals_sum_of_logs() {
        let mut rng = Rng::new(3);
        let x: Vec<f64> = (0..10_001).map(|_| rng.student_t(0.7) * 1e3).collect();
        let c = 0.37;
        let direct: f64 = x.iter().map(|v| (c * (v - 0.5) * (v - 0.5)).ln_1p()).sum();
        let fast = sum_ln_1p_z2(&x, 0.5, c);
        assert!(
            (fast - direct).abs() < 1e-9 * direct.abs(),
            "{fast} vs {direct}"
        );
    }

    #[test]
    fn empty_and_constant_inputs_fall_back() {
        let empty = fit_student_t(&[]);
        assert_eq!((empty.nu, empty.loc, empty.scale), (NU_MAX, 0.0, 0.0));
        let nan = fit_student_t(&[f32::NAN, f32::INFINITY]);
        assert_eq!(nan, empty);
        let c = fit_student_t(&[2.5; 100]);
        assert_eq!((c.nu, c.loc, c.scale), (NU_MAX, 2.5, 0.0));
        let one = fit_student_t(&[-1.0]);
        assert_eq!((one.nu, one.loc, one.scale), (NU_MAX, -1.0, 0.0));
        assert_eq!(fit_block_standardized(&[1.0; 64], 16), empty);
    }

    #[test]
    fn recovers_parameters_of_a_large_sample() {
        let mut rng = Rng::new(11);
        let x: Vec<f32> = (0..200_000)
            .map(|_| (3.0 + 0.5 * rng.student_t(4.0)) as f32)
            .collect();
        let f = fit_student_t(&x);
        assert!((f.nu - 4.0).abs() < 0.2, "{f:?}");
        assert!((f.loc - 3.0).abs() < 0.01, "{f:?}");
        assert!((f.scale - 0.5).abs() < 0.01, "{f:?}");
    }

    #[test]
    fn normal_data_reaches_the_upper_bound() {
        let x = Rng::new(5).normal_vec(400_000);
        let f = fit_student_t(&x);
        assert!(f.nu > 100.0, "{f:?}");
        assert!((f.scale - 1.0).abs() < 0.01, "{f:?}");
    }

    #[test]
    fn mostly_tied_data_stays_finite() {
        // 60% exact zeros, as in a pruned tensor: the likelihood is unbounded at small nu.
        let mut rng = Rng::new(9);
        let x: Vec<f32> = (0..10_000)
            .map(|i| if i % 5 < 3 { 0.0 } else { rng.normal() as f32 })
            .collect();
        let f = fit_student_t(&x);
        assert!(
            f.nu.is_finite() && f.scale > 0.0 && f.loc.is_finite(),
            "{f:?}"
        );
        assert!(f.log_likelihood(&x).is_finite());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn any_f32() -> impl Strategy<Value = f32> {
            prop_oneof![
                4 => -3.0f32..3.0,
                1 => any::<u32>().prop_map(f32::from_bits),
                1 => Just(0.0f32),
                1 => Just(f32::MAX),
            ]
        }

        fn sane(f: TFit) -> bool {
            (NU_MIN..=NU_MAX).contains(&f.nu)
                && f.loc.is_finite()
                && f.scale.is_finite()
                && f.scale >= 0.0
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn any_input_gives_a_finite_fit(
                x in proptest::collection::vec(any_f32(), 0..200),
                block in 0usize..70,
            ) {
                let f = fit_student_t(&x);
                prop_assert!(sane(f), "{:?}", f);
                let g = fit_block_standardized(&x, block);
                prop_assert!(sane(g), "{:?}", g);
            }
        }
    }

    #[test]
    fn samples_are_whole_blocks_from_every_stratum_and_every_column() {
        // 1408 x 2048 of element indices, blocks of 64: 32 blocks a row.
        let x: Vec<f32> = (0..1408 * 2048).map(|i| i as f32).collect();
        let sampling = FitSampling::Blocks {
            values: 1 << 14,
            seed: 1,
        };
        let s = sample_blocks(&x, 64, sampling);
        assert_eq!(s.len(), 1 << 14);
        let blocks: Vec<usize> = s.chunks(64).map(|b| b[0] as usize / 64).collect();
        for (b, chunk) in blocks.iter().zip(s.chunks(64)) {
            assert!(chunk
                .iter()
                .enumerate()
                .all(|(k, &v)| v as usize == b * 64 + k));
        }
        // One block from each of the 256 equal strata, in order: the whole matrix is covered.
        let n_blocks = x.len() / 64;
        for (i, &b) in blocks.iter().enumerate() {
            assert!(
                (i * n_blocks / 256..(i + 1) * n_blocks / 256).contains(&b),
                "{i}: {b}"
            );
        }
        // Random within the strata, so not every sampled block is in the same column.
        let cols: std::collections::BTreeSet<usize> = blocks.iter().map(|b| b % 32).collect();
        assert!(cols.len() >= 30, "{cols:?}");
        // Deterministic for a seed; another seed, another sample; small inputs are not sampled.
        assert_eq!(sample_blocks(&x, 64, sampling), s);
        let other = FitSampling::Blocks {
            values: 1 << 14,
            seed: 2,
        };
        assert_ne!(sample_blocks(&x, 64, other), s);
        assert!(matches!(
            sample_blocks(&x[..1 << 14], 64, sampling),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            sample_blocks(&x, 64, FitSampling::Full),
            Cow::Borrowed(_)
        ));
        // The sampled fits are the fits of the sample.
        let t = Rng::new(2).student_t_vec(1 << 16, 5.0);
        let sample = sample_blocks(&t, 64, FitSampling::DEFAULT);
        assert_eq!(
            fit_block_standardized_with(&t, 64, FitSampling::DEFAULT),
            fit_block_standardized(&sample, 64)
        );
        assert_eq!(
            fit_student_t_with(&t, 64, FitSampling::DEFAULT),
            fit_student_t(&sample)
        );
    }

    #[test]
    fn block_standardization_removes_between_block_tails() {
        // Normal blocks whose scales vary widely: heavy-tailed as a whole, normal inside blocks.
        let mut rng = Rng::new(21);
        let mut x = Vec::new();
        for b in 0..4000 {
            let s = (0.2 * (b % 37) as f64 - 3.0).exp();
            x.extend((0..64).map(|_| (s * rng.normal()) as f32));
        }
        let whole = fit_student_t(&x);
        let inner = fit_block_standardized(&x, 64);
        assert!(whole.nu < 5.0, "{whole:?}");
        assert!(inner.nu > 30.0, "{inner:?}");
    }
}
