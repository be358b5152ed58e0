//! Encoding one block once its scale is known: its largest magnitude ([`block_extreme`]) and
//! its codes (`cb.encode(x / scale)` per element). [`BlockEncode`] lets a vectorized encoder
//! (`tquant-kernels`) stand in for the portable one; the codes must be the same bytes.

use crate::Codebook;

/// The most thresholds a table has (16 values).
pub const MAX_THRESHOLDS: usize = 15;

/// What an encoder needs to know about a codebook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodeTable {
    /// [`Codebook::thresholds`] ascending, padded with +inf: an element's rank is the number of
    /// entries strictly below it (padding never counts, NaN counts none).
    pub thresholds: [f32; 16],
    /// The code of each rank.
    pub rank_code: [u8; 16],
    /// The code NaN encodes to.
    pub zero_code: u8,
}

impl EncodeTable {
    /// The table of `cb`.
    pub fn new(cb: &Codebook) -> Self {
        let mut thresholds = [f32::INFINITY; 16];
        thresholds[..cb.thresholds().len()].copy_from_slice(cb.thresholds());
        Self {
            thresholds,
            rank_code: cb.rank_codes(),
            zero_code: cb.encode(f32::NAN),
        }
    }
}

/// A block encoder. Both methods must give exactly what the portable ones give.
pub trait BlockEncode {
    /// [`block_extreme`].
    fn extreme(&self, block: &[f32]) -> (f32, f32);
    /// `out[i] = cb.encode(block[i] / scale)` ([`Codebook::encode_scaled`]); `scale` is finite
    /// and nonzero.
    fn encode_scaled(&self, table: &EncodeTable, block: &[f32], scale: f32, out: &mut [u8]);
}

/// The portable encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortableEncode;

impl BlockEncode for PortableEncode {
    fn extreme(&self, block: &[f32]) -> (f32, f32) {
        block_extreme(block)
    }

    fn encode_scaled(&self, table: &EncodeTable, block: &[f32], scale: f32, out: &mut [u8]) {
        encode_scaled_portable(table, block, scale, out)
    }
}

/// [`Codebook::encode_scaled`] from an [`EncodeTable`]: the scalar twin of the vectorized
/// encoders.
pub fn encode_scaled_portable(table: &EncodeTable, block: &[f32], scale: f32, out: &mut [u8]) {
    assert_eq!(block.len(), out.len());
    for (o, &x) in out.iter_mut().zip(block) {
        let q = x / scale;
        let r: usize = table.thresholds.iter().map(|&t| (t < q) as usize).sum();
        *o = if q.is_nan() {
            table.zero_code
        } else {
            table.rank_code[r & 15]
        };
    }
}

/// The block's largest finite magnitude and the signed element holding it (the positive one on
/// ties); (0, 0) when there is none. Eight lanes of max and min, which vectorize (`f32::max`
/// skips NaN); infinities send the block to a filtering pass.
pub fn block_extreme(block: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let mut hi = [f32::NEG_INFINITY; LANES];
    let mut lo = [f32::INFINITY; LANES];
    let mut chunks = block.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            hi[l] = hi[l].max(c[l]);
            lo[l] = lo[l].min(c[l]);
        }
    }
    let max = hi.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let min = lo.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let (max, min) = chunks
        .remainder()
        .iter()
        .fold((max, min), |(a, b), &v| (a.max(v), b.min(v)));
    extreme_of(block, max, min)
}

/// The block's extreme from its largest and smallest non-NaN elements (in any order of
/// reduction): an infinite one sends the block to a pass over its finite elements.
pub fn extreme_of(block: &[f32], mut max: f32, mut min: f32) -> (f32, f32) {
    if max.is_infinite() || min.is_infinite() {
        // Some element is infinite, or none is a number: use the finite ones only.
        let finite = || block.iter().copied().filter(|v| v.is_finite());
        max = finite().fold(f32::NEG_INFINITY, f32::max);
        min = finite().fold(f32::INFINITY, f32::min);
        if max == f32::NEG_INFINITY {
            return (0.0, 0.0);
        }
    }
    if max >= -min {
        (max.abs(), max)
    } else {
        (-min, min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn portable_encoder_matches_the_codebook() {
        let mut rng = crate::sample::Rng::new(3);
        for f in Format::all() {
            let cb = f.codebook();
            let t = EncodeTable::new(cb);
            for len in [1usize, 7, 16, 33, 64] {
                let mut b = rng.normal_vec(len);
                b[0] = f32::NAN;
                if len > 2 {
                    b[1] = f32::INFINITY;
                    b[2] = f32::NEG_INFINITY;
                }
                for s in [0.3f32, -0.7, 1e-30] {
                    let mut want = vec![0u8; len];
                    let mut got = vec![1u8; len];
                    cb.encode_scaled(&b, s, &mut want);
                    encode_scaled_portable(&t, &b, s, &mut got);
                    assert_eq!(got, want, "{f} len {len} scale {s}");
                }
            }
        }
    }
}
