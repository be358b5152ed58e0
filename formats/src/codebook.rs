//! A codebook: the 2^bits values a code can stand for, in code order, and nearest-value encoding.

use crate::FormatError;

/// The values of a k-bit format in code order (`values()[c]` is what code `c` decodes to).
///
/// Encoding is round-to-nearest. **Tie rule:** a value exactly halfway between two neighbouring
/// table values goes to the one whose code is even. For the E2M1 family this is exactly OCP's
/// round-to-nearest-even (0.25 -> 0, 0.75 -> 1, 2.5 -> 2, 5 -> 4), and it is defined for any
/// table. Where two codes hold the same value (E2M1's -0 at `0b1000`, INT4's unused code), the
/// encoder only ever emits the smaller code. NaN encodes to the code of the value nearest zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    values: Vec<f32>,
    /// Distinct values, ascending, each with the code the encoder emits for it.
    sorted: Vec<(f32, u8)>,
    /// `thresholds[i]`: the largest f32 that encodes to `sorted[i]` rather than `sorted[i + 1]`.
    thresholds: Vec<f32>,
    zero_code: u8,
    /// `sorted[k].1` for `k < sorted.len()`: the code of the k-th distinct value.
    rank_code: [u8; 16],
    /// Largest magnitude, and the signed value holding it (positive when both signs do).
    max_abs: f32,
    extreme: f32,
    one_sided: bool,
    /// Whether the set of values is closed under negation.
    symmetric: bool,
    /// What the scale search's screen needs, when the table suits it (boxed: a codebook is
    /// held by value in many enums).
    screen: Option<Box<crate::screen::ScreenTable>>,
}

impl Codebook {
    /// Builds a codebook from its values in code order; 2, 4, 8 or 16 finite values.
    pub fn new(values: Vec<f32>) -> Result<Self, FormatError> {
        let n = values.len();
        if !matches!(n, 2 | 4 | 8 | 16) {
            return Err(FormatError::CodebookSize { len: n });
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(FormatError::CodebookValue { value: *v });
        }
        if values.iter().all(|&v| v == 0.0) {
            return Err(FormatError::CodebookZero);
        }
        let mut sorted: Vec<(f32, u8)> = values
            .iter()
            .enumerate()
            .map(|(c, &v)| (if v == 0.0 { 0.0 } else { v }, c as u8))
            .collect();
        // Ascending by value, and for equal values the smallest code first, which we keep.
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        sorted.dedup_by(|later, kept| later.0 == kept.0);
        let thresholds = sorted.windows(2).map(|w| lower_max(w[0], w[1])).collect();
        let max_abs = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let has = |x: f32| values.contains(&x);
        let extreme = if has(max_abs) { max_abs } else { -max_abs };
        let one_sided = !(has(max_abs) && has(-max_abs));
        let mut rank_code = [0u8; 16];
        for (r, &(_, c)) in rank_code.iter_mut().zip(&sorted) {
            *r = c;
        }
        let zero_code = sorted
            .iter()
            .min_by(|a, b| a.0.abs().total_cmp(&b.0.abs()).then(a.1.cmp(&b.1)))
            .map(|p| p.1)
            .unwrap_or(0);
        let symmetric = sorted
            .iter()
            .all(|&(v, _)| sorted.iter().any(|&(w, _)| w == -v));
        let mut cb = Self {
            values,
            sorted,
            symmetric,
            screen: None,
            thresholds,
            zero_code,
            rank_code,
            max_abs,
            extreme,
            one_sided,
        };
        cb.screen = crate::screen::ScreenTable::new(cb.sorted(), cb.thresholds()).map(Box::new);
        Ok(cb)
    }

    /// The table of the scale search's screen ([`crate::screen::ScreenTable::new`]), built once.
    pub fn screen_table(&self) -> Option<&crate::screen::ScreenTable> {
        self.screen.as_deref()
    }

    /// The code of each rank (the k-th distinct value ascending), zero past the last.
    pub fn rank_codes(&self) -> [u8; 16] {
        self.rank_code
    }

    /// The values in code order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Bits per code: log2 of the number of values.
    pub fn bits(&self) -> u32 {
        self.values.len().trailing_zeros()
    }

    /// The value of `code`. Panics if `code >= 2^bits`; use [`Codebook::try_decode`] on untrusted codes.
    pub fn decode(&self, code: u8) -> f32 {
        self.values[code as usize]
    }

    /// The value of `code`, or `None` when the code is out of range.
    pub fn try_decode(&self, code: u8) -> Option<f32> {
        self.values.get(code as usize).copied()
    }

    /// The largest magnitude in the table: the scale rule maps a block's absmax onto it.
    pub fn max_abs(&self) -> f32 {
        self.max_abs
    }

    /// The value of largest magnitude; the positive one when both signs have it.
    pub fn extreme(&self) -> f32 {
        self.extreme
    }

    /// True when the largest magnitude exists on one side only (`int4_full`'s -8, `e2m1_sr`'s +8):
    /// the scale rule then maps each block's extreme onto it with a signed scale.
    pub fn needs_signed_scale(&self) -> bool {
        self.one_sided
    }

    /// True when the set of values is closed under negation (E2M1, INT4, APoT4; not NF4 or SF4,
    /// which have one more positive value than negative ones).
    pub fn is_symmetric(&self) -> bool {
        self.symmetric
    }

    /// Distinct values in ascending order, each with the code the encoder emits for it.
    pub fn sorted(&self) -> &[(f32, u8)] {
        &self.sorted
    }

    /// Decision thresholds, ascending: `thresholds()[i]` is the largest f32 that encodes to
    /// `sorted()[i]` rather than `sorted()[i + 1]`, with the exact midpoint and the tie rule
    /// already applied. So `encode(x)` is `sorted()[k].1` with `k` the number of thresholds
    /// strictly below `x` (for non-NaN `x`), which is how a vector encoder can do it too.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// The code of the value nearest `x` (see the type's tie rule).
    #[inline]
    pub fn encode(&self, x: f32) -> u8 {
        if x.is_nan() {
            return self.zero_code;
        }
        // Branch-free count of the thresholds below x: at most 15 compares, no mispredictions.
        let k: usize = self.thresholds.iter().map(|&t| (t < x) as usize).sum();
        self.sorted[k].1
    }

    /// `out[i] = encode(xs[i] / scale)` for every `i`, eight at a time: each lane counts the
    /// thresholds below it in registers, which the compiler turns into vector compares.
    pub fn encode_scaled(&self, xs: &[f32], scale: f32, out: &mut [u8]) {
        const LANES: usize = 8;
        debug_assert_eq!(xs.len(), out.len());
        let mut xc = xs.chunks_exact(LANES);
        let mut oc = out.chunks_exact_mut(LANES);
        for (x8, o8) in (&mut xc).zip(&mut oc) {
            let mut q = [0f32; LANES];
            for (qi, &x) in q.iter_mut().zip(x8) {
                *qi = x / scale;
            }
            let mut rank = [0u32; LANES];
            for &t in &self.thresholds {
                for (r, &qi) in rank.iter_mut().zip(&q) {
                    *r += (t < qi) as u32;
                }
            }
            for ((o, &r), &qi) in o8.iter_mut().zip(&rank).zip(&q) {
                let code = self.rank_code[(r & 15) as usize];
                *o = if qi.is_nan() { self.zero_code } else { code };
            }
        }
        for (o, &x) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
            *o = self.encode(x / scale);
        }
    }

    /// The value nearest `x`: `decode(encode(x))`.
    #[inline]
    pub fn round(&self, x: f32) -> f32 {
        self.decode(self.encode(x))
    }
}

/// The largest f32 that is nearer `lo` than `hi` (or equally near, when the tie rule picks `lo`).
/// The exact midpoint is computed in f64 (exact for two f32), since its f32 rounding can fall on
/// either side of it.
fn lower_max(lo: (f32, u8), hi: (f32, u8)) -> f32 {
    let mid = (lo.0 as f64 + hi.0 as f64) * 0.5;
    let m = mid as f32;
    let lo_wins_tie = lo.1 % 2 == 0 || hi.1 % 2 != 0;
    if (m as f64) < mid || ((m as f64) == mid && lo_wins_tie) {
        m
    } else {
        next_down(m)
    }
}

/// The next f32 towards minus infinity (`f32::next_down`, stable only from Rust 1.86).
fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2m1() -> Codebook {
        Codebook::new(vec![
            0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
        ])
        .unwrap()
    }

    #[test]
    fn ties_go_to_the_even_code_like_ocp_round_to_nearest_even() {
        let cb = e2m1();
        for (x, want) in [
            (0.25, 0.0),
            (0.75, 1.0),
            (1.25, 1.0),
            (1.75, 2.0),
            (2.5, 2.0),
            (3.5, 4.0),
            (5.0, 4.0),
            (-0.75, -1.0),
            (-5.0, -4.0),
        ] {
            assert_eq!(cb.round(x), want, "x = {x}");
        }
    }

    #[test]
    fn negative_zero_code_is_never_emitted() {
        let cb = e2m1();
        for x in [0.0f32, -0.0, 1e-30, -1e-30, -0.2] {
            assert_eq!(cb.encode(x), 0, "x = {x}");
        }
    }

    #[test]
    fn rejects_bad_tables() {
        assert!(Codebook::new(vec![0.0; 5]).is_err());
        assert!(Codebook::new(vec![0.0; 16]).is_err());
        assert!(Codebook::new(vec![f32::NAN, 1.0]).is_err());
    }
}
