//! [`crate::ScaleRule::Search`] without encoding the block once per candidate scale.
//!
//! Blocks that [`crate::screen`] takes (every catalog table of more than two values, f32, f16,
//! bf16 and E4M3 scales, magnitudes away from the ends of f32) go through
//! [`screened_scale`]. The others (two-value tables, scale dtypes whose candidates are too far
//! apart for the screen's one-step walk, extreme magnitudes) use [`least_error_scale`]:
//!
//! The block is sorted once. For a scale `s > 0`, the elements that encode to the `k` smallest
//! table values are then a prefix of the sorted block: `x` encodes at or below threshold `t` iff
//! `round_f32(x / s) <= t`, iff `x < m * s` (or `x == m * s` and the round-to-even tie falls on
//! `t`), where `m` is the exact midpoint of `t` and the next f32 above it. `m * s` is exact in
//! f64 (25 + 24 significant bits), so each code boundary is an exact comparison, and the
//! boundaries move little from one candidate to the next, so they are walked rather than
//! searched. With prefix sums of `x` and `x^2`, a candidate's squared error is
//! `sum x^2 + sum_k y_k (y_k n_k - 2 sum_k x)` over the table's values `y_k = f32(v_k * s)`:
//! O(table) work per candidate instead of O(block). A negative scale is the positive one on the
//! negated block (`x / s == (-x) / (-s)` exactly).
//!
//! That closed form rounds differently from the reference's element-by-element sum, so it only
//! screens: every candidate whose error could be the least within a rigorous rounding bound is
//! re-evaluated with [`block_sq_err`], and the first of the least (base scale first) wins, which
//! is the reference's rule. The chosen scale is the reference's, bit for bit.

use crate::screen::{screen_tolerance, Screen, ScreenJob, ScreenTable};
use crate::Codebook;

/// How many candidate scales [`crate::ScaleRule::Search`] tries on each side of the sign (the
/// multipliers 70%..=110% of the base scale), and where 100% is among them.
pub(crate) const SEARCH_STEPS: usize = 41;
pub(crate) const BASE_STEP: usize = 30;

/// Squared error of one block encoded with `scale` and decoded as the kernels do
/// (`values[code] * scale` in f32), summed in f64.
pub fn block_sq_err(cb: &Codebook, block: &[f32], scale: f32) -> f64 {
    if scale == 0.0 {
        return block.iter().map(|&x| x as f64 * x as f64).sum();
    }
    let mut codes = [0u8; 256];
    let mut err = 0.0f64;
    for chunk in block.chunks(codes.len()) {
        let codes = &mut codes[..chunk.len()];
        cb.encode_scaled(chunk, scale, codes);
        for (&x, &c) in chunk.iter().zip(codes.iter()) {
            let d = x as f64 - (cb.decode(c) * scale) as f64;
            err += d * d;
        }
    }
    err
}

/// Reusable buffers of one block's search.
#[derive(Debug, Default)]
pub(crate) struct SearchScratch {
    keys: Vec<u32>,
    up: Side,
    down: Side,
    screen: Vec<(f64, f64)>,
}

/// The sorted block (or its negation) with prefix sums, and the walked code boundaries.
#[derive(Debug, Default)]
struct Side {
    z: Vec<f64>,
    /// `p1[i]`, `p2[i]`: sums of `z[..i]` and of their squares.
    p1: Vec<f64>,
    p2: Vec<f64>,
    /// Per threshold, how many `z` encode at or below it (for the last scale evaluated;
    /// `usize::MAX` before the first).
    count: [usize; 16],
}

impl Side {
    fn fill(&mut self, z: impl Iterator<Item = f64>) {
        self.z.clear();
        self.z.extend(z);
        self.p1.clear();
        self.p2.clear();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        self.p1.push(0.0);
        self.p2.push(0.0);
        for &v in &self.z {
            s1 += v;
            s2 += v * v;
            self.p1.push(s1);
            self.p2.push(s2);
        }
        self.count = [usize::MAX; 16];
    }
}

/// f32 bits mapped so that unsigned order is numeric order (finite values).
#[inline]
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | (1 << 31)
    }
}

#[inline]
fn from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
}

/// Upper bound on `|closed form - reference|` relative to the errors' magnitude: both are sums of
/// about `n + table` rounded terms each within a few ulps (prefix sums, their differences, the
/// reference's running sum), with a wide margin.
fn rounding_bound(n: usize) -> f64 {
    256.0 * (n as f64 + 64.0) * f64::EPSILON
}

/// The reference's choice among `cands` (the base scale first; each nonzero, finite and
/// distinct from its predecessor) for a block of finite values.
pub(crate) fn least_error_scale(
    cb: &Codebook,
    block: &[f32],
    cands: &[f32],
    sc: &mut SearchScratch,
) -> f32 {
    if cands.len() == 1 {
        return cands[0];
    }
    let n = block.len();
    let thresholds = cb.thresholds();
    let nt = thresholds.len();
    // Per threshold: its exact upper midpoint and whether an exact tie rounds above it.
    let mut mid = [0.0f64; 15];
    let mut tie_up = [false; 15];
    for (j, &t) in thresholds.iter().enumerate() {
        let u = next_up(t);
        mid[j] = (t as f64 + u as f64) * 0.5;
        tie_up[j] = u.to_bits() & 1 == 0;
    }
    let mut values = [0.0f32; 16];
    for (v, &(_, code)) in values.iter_mut().zip(cb.sorted()) {
        *v = cb.decode(code);
    }

    sc.keys.clear();
    sc.keys.extend(block.iter().map(|&x| order_key(x)));
    sc.keys.sort_unstable();
    let any_negative = cands.iter().any(|&s| s < 0.0);
    sc.up.fill(sc.keys.iter().map(|&k| from_key(k) as f64));
    if any_negative {
        let up = &sc.up.z;
        sc.down.fill(up.iter().rev().map(|&v| -v));
    }

    sc.screen.clear();
    let bound = rounding_bound(n);
    for &s in cands {
        let side = if s > 0.0 { &mut sc.up } else { &mut sc.down };
        let a = s.abs();
        let af = a as f64;
        // Walk each boundary to its place for this scale.
        let z = &side.z;
        for ((count, &m), &up) in side.count[..nt].iter_mut().zip(&mid).zip(&tie_up) {
            let b = m * af;
            let le = |z: f64| z < b || (z == b && !up);
            let mut c = *count;
            if c == usize::MAX {
                // First scale on this side: search, then walk from there for the next ones.
                c = z.partition_point(|&v| le(v));
            }
            while c < n && le(z[c]) {
                c += 1;
            }
            while c > 0 && !le(z[c - 1]) {
                c -= 1;
            }
            *count = c;
        }
        let total = side.p2[n];
        let (mut err, mut mag) = (total, total);
        let mut lo = 0usize;
        for (k, &v) in values[..=nt].iter().enumerate() {
            let hi = if k < nt { side.count[k] } else { n };
            let y = (v * a) as f64;
            let cnt = (hi - lo) as f64;
            let s1 = side.p1[hi] - side.p1[lo];
            err += y * (y * cnt - 2.0 * s1);
            mag += y * y * cnt;
            lo = hi;
        }
        sc.screen.push((err, bound * mag));
    }

    let ceiling = sc
        .screen
        .iter()
        .map(|&(e, tol)| e + tol)
        .fold(f64::INFINITY, f64::min);
    let mut near = cands
        .iter()
        .zip(&sc.screen)
        .filter(|(_, &(e, tol))| e - tol <= ceiling)
        .map(|(&s, _)| s);
    let first = near.next().expect("the least screened candidate is near");
    let Some(second) = near.next() else {
        return first;
    };
    let mut best = (block_sq_err(cb, block, first), first);
    for s in std::iter::once(second).chain(near) {
        let e = block_sq_err(cb, block, s);
        if e < best.0 {
            best = (e, s);
        }
    }
    best.1
}

use crate::screen::next_up;

/// The reference's choice among the candidates of a block the screen accepts: the base scale
/// (`mags[BASE_STEP]` with the sign of `base`), then `mags` with that sign, then (when `flip`)
/// with the other. The screen's f32 errors decide unless candidates are within its rounding
/// bound of the least; those are evaluated exactly, and the first of the least wins.
pub(crate) fn screened_scale(
    cb: &Codebook,
    table: &ScreenTable,
    block: &[f32],
    base: f32,
    mags: &[f32; SEARCH_STEPS],
    flip: bool,
    screen: &dyn Screen,
) -> f32 {
    let neg = base < 0.0;
    let sides = [neg, !neg];
    let negate = &sides[..1 + flip as usize];
    let mut errs = [0.0f32; 2 * SEARCH_STEPS];
    let errs = &mut errs[..negate.len() * SEARCH_STEPS];
    screen.screen(
        &ScreenJob {
            block,
            table,
            mags,
            negate,
        },
        errs,
    );
    let n = block.len();
    let c = screen_tolerance(n, 1.0) - screen_tolerance(n, 0.0);
    let abs = screen_tolerance(n, 0.0);
    // The least upper bound over candidates is the least error's (the tolerance grows with
    // the error); a candidate is near when its lower bound is at most that.
    let emin = errs.iter().copied().fold(f32::INFINITY, f32::min) as f64;
    let ceiling = emin + emin * c + abs;
    let limit = (ceiling + abs) / (1.0 - c);
    let near = |c: usize| errs[c] as f64 <= limit;
    let scale = |c: usize| {
        let a = mags[c % SEARCH_STEPS];
        // Side 0 has the base's sign.
        if (c >= SEARCH_STEPS) == neg {
            a
        } else {
            -a
        }
    };
    if errs.iter().filter(|&&e| e as f64 <= limit).count() == 1 {
        return scale((0..errs.len()).find(|&c| near(c)).expect("one is near"));
    }
    // Near ties: the exact errors, in the reference's order (the base first), the first of the
    // least winning; a repeat of the scale evaluated last cannot win.
    let order = std::iter::once(BASE_STEP).chain(0..errs.len());
    let mut best = (f64::INFINITY, 0.0f32);
    let mut last = 0.0f32;
    for c in order.filter(|&c| near(c)) {
        let s = scale(c);
        if s == last || s == best.1 {
            continue;
        }
        last = s;
        let e = block_sq_err(cb, block, s);
        if e < best.0 {
            best = (e, s);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_sort_numerically_and_round_trip() {
        let xs = [-3.5f32, -0.0, 0.0, 1e-40, -1e-40, 2.0, f32::MAX, -f32::MAX];
        for &x in &xs {
            assert_eq!(from_key(order_key(x)).to_bits(), x.to_bits());
        }
        let mut sorted = xs;
        sorted.sort_by_key(|&x| order_key(x));
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "{sorted:?}");
    }

    #[test]
    fn boundary_comparison_matches_dividing() {
        // x encodes above t iff x > m * s, or x == m * s with the tie going up.
        let mut rng = crate::sample::Rng::new(4);
        for _ in 0..200_000 {
            let t = (rng.normal() * 0.5) as f32;
            let s = (rng.uniform() * 2.0 + 1e-3) as f32;
            // Values near the boundary, including exact ties.
            let m = (t as f64 + next_up(t) as f64) * 0.5;
            let b = m * s as f64;
            let x = match rng.below(3) {
                0 => b as f32,
                1 => f32::from_bits((b as f32).to_bits().wrapping_add(rng.below(5) as u32)),
                _ => f32::from_bits((b as f32).to_bits().wrapping_sub(rng.below(5) as u32)),
            };
            let tie_up = next_up(t).to_bits() & 1 == 0;
            let above = (x as f64) > b || ((x as f64) == b && tie_up);
            assert_eq!(t < x / s, above, "t {t} s {s} x {x}");
        }
    }
}
