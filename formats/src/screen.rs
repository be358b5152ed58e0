//! Screening the candidate scales of [`crate::ScaleRule::Search`]: every candidate's squared
//! error in f32, with codes that are exactly the reference encoder's, so that only candidates
//! within an f32 rounding bound of the least need the exact (f64) evaluation.
//!
//! For a scale magnitude `a > 0`, `z` encodes at or below threshold `j` iff `z < B_j(a)`, where
//! `B_j(a)` is one f32 ([`ScreenTable::boundaries`]): the exact boundary `m_j * a` (`m_j` the
//! midpoint of the threshold and the next f32 above it, exact in f64) moved to the f32 that
//! makes a strict comparison agree with the reference's division and round-to-even tie. A code
//! is then a count of boundaries at or below `z`, with no division.
//!
//! The candidates' magnitudes ascend and each is within [`ScreenTable::max_step`] of the
//! previous one, so from one candidate to the next an element crosses at most one boundary, and
//! only towards the zero code: a positive `z` can only drop below `B_{k-1}`, a negative one only
//! reach `B_k`. One table lookup and one comparison per element and candidate update its code
//! ([`screen_portable`] is the plain version; `tquant-kernels` vectorizes it). A negative scale
//! is the positive one on the negated block (`x / s == (-x) / (-s)` and
//! `f32(v * s) == -f32(v * -s)` exactly).

/// The most distinct values a table has.
pub const MAX_LEVELS: usize = 16;
/// The most magnitudes one job screens.
pub const MAX_MAGS: usize = 64;

/// What a screen needs to know about a codebook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScreenTable {
    /// Distinct values ascending in `levels[..len]`, then zeros.
    pub levels: [f32; MAX_LEVELS],
    /// Number of distinct values.
    pub len: usize,
    /// Per threshold `j < len - 1`: the exact midpoint between it and the next f32 above it.
    pub mids: [f64; MAX_LEVELS],
    /// Per threshold: whether an element exactly at `mids[j] * a` encodes above it (the
    /// round-to-even tie of `x / a` falls on the next f32 up).
    pub tie_up: [bool; MAX_LEVELS],
    /// Largest ratio between consecutive candidate magnitudes for which no element crosses two
    /// boundaries in one step.
    pub max_step: f64,
}

impl ScreenTable {
    /// The table of a codebook given as its values in ascending order with their codes
    /// ([`crate::Codebook::sorted`]) and the midpoints between them
    /// ([`crate::Codebook::thresholds`]), or `None` when it does not suit the screen: its lowest
    /// threshold must be negative and its highest positive (so the zero code is never the first
    /// or the last; every catalog table of more than two values is like this).
    pub fn new(sorted: &[(f32, u8)], thresholds: &[f32]) -> Option<Self> {
        let t = thresholds;
        let len = sorted.len();
        if !(3..=MAX_LEVELS).contains(&len) {
            return None;
        }
        let mut s = Self {
            levels: [0.0; MAX_LEVELS],
            len,
            mids: [0.0; MAX_LEVELS],
            tie_up: [false; MAX_LEVELS],
            max_step: f64::INFINITY,
        };
        for (l, &(v, _)) in s.levels.iter_mut().zip(sorted) {
            *l = v;
        }
        for (j, &tj) in t.iter().enumerate() {
            let u = next_up(tj);
            s.mids[j] = (tj as f64 + u as f64) * 0.5;
            s.tie_up[j] = u.to_bits() & 1 == 0;
        }
        let m = &s.mids[..len - 1];
        // Far from every edge of f32: boundaries stay normal for the magnitudes screened.
        if m[0] > -1e-20 || m[len - 2] < 1e-20 || m.iter().any(|v| v.abs() > 1e20) {
            return None;
        }
        for w in m.windows(2) {
            let (lo, hi) = (w[0], w[1]);
            // Two boundaries of one sign: an element between them crosses the outer one first.
            let ratio = if lo > 0.0 {
                hi / lo
            } else if hi < 0.0 {
                lo / hi
            } else {
                continue;
            };
            s.max_step = s.max_step.min(ratio);
        }
        // Margin for the boundaries' rounding to f32.
        s.max_step *= 1.0 - 1e-5;
        Some(s)
    }

    /// The boundaries for magnitude `a` (positive, finite): `z` encodes at or below threshold
    /// `j` under scale `a` iff `z < out[j]`; entries from `len - 1` on are +inf.
    pub fn boundaries(&self, a: f32, out: &mut [f32; MAX_LEVELS]) {
        out.fill(f32::INFINITY);
        let nb = self.len - 1;
        for ((o, &m), &up) in out[..nb].iter_mut().zip(&self.mids).zip(&self.tie_up) {
            *o = boundary(m, up, a);
        }
    }

    /// Whether the screen handles magnitudes `mags` (ascending, positive, finite, each within
    /// `max_step` of the previous) on a block whose largest magnitude is `absmax` (away from the
    /// ends of f32, so that neither the f32 errors nor the boundaries under- or overflow).
    pub fn accepts(&self, absmax: f32, mags: &[f32]) -> bool {
        if !(1e-12..=1e12).contains(&absmax) {
            return false;
        }
        let ok_mag = |a: f32| (1e-20..=1e20).contains(&a);
        let (Some(&first), Some(&last)) = (mags.first(), mags.last()) else {
            return false;
        };
        mags.len() <= MAX_MAGS
            && ok_mag(first)
            && ok_mag(last)
            && mags
                .windows(2)
                .all(|w| w[1] >= w[0] && w[1] as f64 <= w[0] as f64 * self.max_step)
    }
}

/// The f32 `b` with `z < b` iff `z` encodes at or below the threshold whose upper midpoint is
/// `m`, under scale magnitude `a`: `z < m * a`, or `z == m * a` with the tie going down.
#[inline]
pub fn boundary(m: f64, tie_up: bool, a: f32) -> f32 {
    let b = m * a as f64; // exact: 25 + 24 significant bits
    let f = b as f32 + 0.0; // nearest; -0 becomes +0
    let fd = f as f64;
    // No f32 lies strictly between b and f: below f, every f32 is below b.
    if fd < b || (fd == b && !tie_up) {
        next_up(f)
    } else {
        f
    }
}

/// One block's screening: the squared errors of `block` under every magnitude of `mags`, on
/// each side.
#[derive(Debug, Clone, Copy)]
pub struct ScreenJob<'a> {
    /// The block (finite values).
    pub block: &'a [f32],
    /// The codebook's table.
    pub table: &'a ScreenTable,
    /// Scale magnitudes (at most [`MAX_MAGS`]), accepted by [`ScreenTable::accepts`].
    pub mags: &'a [f32],
    /// One entry per side (one or two): side `s` screens `z = -x` when `negate[s]`, else `x`.
    pub negate: &'a [bool],
}

/// A screen: `out[s * mags.len() + i]` receives `sum (z - f32(v(z) * mags[i]))^2` in f32, in any
/// order of summation, where `v(z)` is the table value the reference encoder picks for
/// `z / mags[i]` ([`crate::Codebook::encode`]): the codes must be exact.
pub trait Screen {
    /// Fills `out` (`negate.len() * mags.len()` entries).
    fn screen(&self, job: &ScreenJob<'_>, out: &mut [f32]);
}

/// [`screen_portable`] as a [`Screen`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PortableScreen;

impl Screen for PortableScreen {
    fn screen(&self, job: &ScreenJob<'_>, out: &mut [f32]) {
        screen_portable(job, out)
    }
}

/// The screen in plain Rust: codes stepped from one magnitude to the next as described in the
/// module's documentation.
pub fn screen_portable(job: &ScreenJob<'_>, out: &mut [f32]) {
    let m = job.mags.len();
    assert_eq!(out.len(), job.negate.len() * m);
    if m == 0 {
        return;
    }
    let t = job.table;
    let mut bounds = vec![[0.0f32; MAX_LEVELS]; m];
    let mut ys = vec![[0.0f32; MAX_LEVELS]; m];
    for ((b, y), &a) in bounds.iter_mut().zip(ys.iter_mut()).zip(job.mags) {
        t.boundaries(a, b);
        for (yk, &v) in y.iter_mut().zip(&t.levels) {
            *yk = v * a;
        }
    }
    const LANES: usize = 8;
    for (side, &neg) in job.negate.iter().enumerate() {
        let out = &mut out[side * m..(side + 1) * m];
        out.fill(0.0);
        // Eight elements at a time, so that eight code updates are in flight.
        for chunk in job.block.chunks(LANES) {
            let mut z = [0.0f32; LANES];
            let mut k = [0usize; LANES];
            // Where `z < 0` the code looks at `B[k]` and steps up, elsewhere at `B[k-1]`, down.
            let mut up = [false; LANES];
            for (l, &x) in chunk.iter().enumerate() {
                z[l] = if neg { -x } else { x };
                k[l] = bounds[0][..t.len - 1]
                    .iter()
                    .filter(|&&b| z[l] >= b)
                    .count();
                up[l] = z[l] < 0.0;
            }
            let lanes = chunk.len();
            for (i, o) in out.iter_mut().enumerate() {
                let mut sum = 0.0f32;
                for l in 0..lanes {
                    if i > 0 {
                        let b = bounds[i][k[l] + up[l] as usize - 1];
                        let cross = (z[l] < b) != up[l];
                        k[l] = if cross {
                            if up[l] {
                                k[l] + 1
                            } else {
                                k[l] - 1
                            }
                        } else {
                            k[l]
                        };
                    }
                    let d = z[l] - ys[i][k[l]];
                    sum += d * d;
                }
                *o += sum;
            }
        }
    }
}

/// Upper bound on `|screened - exact|` for a block of `n` elements and a screened error `e`:
/// `n` squares and sums in f32, each within a relative 2^-24 (twice that, plus the reference's
/// own f64 rounding, with room), and subnormal roundings.
pub fn screen_tolerance(n: usize, e: f32) -> f64 {
    let n = n as f64 + 8.0;
    e as f64 * n * 2f64.powi(-22) + n * 2f64.powi(-120)
}

/// The next f32 above a finite `x`.
pub(crate) fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn boundaries_agree_with_dividing() {
        let mut rng = crate::sample::Rng::new(9);
        for f in Format::all() {
            let cb = f.codebook();
            let Some(t) = ScreenTable::new(cb.sorted(), cb.thresholds()) else {
                continue;
            };
            let mut b = [0.0f32; MAX_LEVELS];
            for _ in 0..2000 {
                let a = (rng.uniform() * 3.0 + 1e-3) as f32;
                t.boundaries(a, &mut b);
                for (j, &bj) in b[..t.len - 1].iter().enumerate() {
                    // The boundary itself, its neighbours, and exact ties.
                    let tie = (t.mids[j] * a as f64) as f32;
                    for z in [bj, next_up(bj), f32::from_bits(bj.to_bits() - 1), tie] {
                        let below = cb.thresholds()[j] >= z / a;
                        assert_eq!(z < bj, below, "{f} a {a} j {j} z {z}");
                    }
                }
            }
        }
    }

    /// The portable screen, counting its jobs.
    struct Counting(std::cell::Cell<usize>);

    impl Screen for Counting {
        fn screen(&self, job: &ScreenJob<'_>, out: &mut [f32]) {
            self.0.set(self.0.get() + 1);
            screen_portable(job, out)
        }
    }

    #[test]
    fn ordinary_blocks_take_the_screen_and_get_the_reference_scale() {
        use crate::{BlockQuantizer, BlockSize, ScaleDtype};
        let mut rng = crate::sample::Rng::new(5);
        for f in Format::all() {
            let cb = f.codebook();
            for d in [
                ScaleDtype::F32,
                ScaleDtype::F16,
                ScaleDtype::Bf16,
                ScaleDtype::E4m3,
            ] {
                let q = BlockQuantizer {
                    block: BlockSize::Elements(64),
                    scale_dtype: d,
                };
                if q.check(cb).is_err() {
                    continue;
                }
                let counting = Counting(std::cell::Cell::new(0));
                for _ in 0..20 {
                    // (E4M3 candidates below 2^-6 are subnormal and too far apart to screen.)
                    let b = rng.normal_vec(64);
                    let got = q.searched_block_scale_with(cb, &b, &counting);
                    let want = q.searched_block_scale_reference(cb, &b);
                    assert_eq!(got.to_bits(), want.to_bits(), "{f} {d}");
                }
                assert_eq!(counting.0.get(), 20, "{f} {d}: every block screened");
            }
        }
    }

    #[test]
    fn catalog_tables_of_three_or_more_values_are_screened() {
        for f in Format::all() {
            let cb = f.codebook();
            let t = ScreenTable::new(cb.sorted(), cb.thresholds());
            assert!(t.is_some(), "{f}");
            // A step of 1.5% (the search's grid) never crosses two boundaries.
            assert!(t.unwrap().max_step > 1.02, "{f}");
        }
    }
}
