//! The data layout of the fast mode's blocked GEMM (see `panel`): the super-chunk and tile
//! shapes, the activations quantized into that layout, and the lane reduction every path uses.
//! A leaf below `panel` and `x86_64`, which both take these types.

use crate::act::{pieces, quantize_piece};
use crate::ACT_BLOCK;
use rayon::prelude::*;

/// Elements per super-chunk, pieces (int32 lanes) per super-chunk, 64-byte steps per super-chunk.
pub(crate) const SUPER: usize = 512;
pub(crate) const PIECES: usize = SUPER / ACT_BLOCK;
pub(crate) const STEPS: usize = 8;
/// Weight rows per micro-kernel and most activation rows per micro-kernel.
pub(crate) const MR: usize = 4;
pub(crate) const NB: usize = 3;

/// One super-chunk of one activation row.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct ActSuper {
    pub vals: [[i8; 64]; STEPS],
    /// `-128 *` each piece's sum of int8 values.
    pub ncorr: [i32; PIECES],
    /// Each piece's activation scale (0 past the row).
    pub scale: [f32; PIECES],
}

const EMPTY_ACT: ActSuper = ActSuper {
    vals: [[0; 64]; STEPS],
    ncorr: [0; PIECES],
    scale: [0.0; PIECES],
};

/// One super-chunk of a tile of `MR` decoded weight rows: step-major so a micro-kernel reads
/// one stream.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct WSuper {
    /// `table_i8 + 128` per element (AVX2: `table_i8`), `[step][row][64]`.
    pub vals: [[[u8; 64]; MR]; STEPS],
    /// Each piece's weight scale (its block's), 0 past the row.
    pub scale: [[f32; PIECES]; MR],
}

pub(crate) const EMPTY_W: WSuper = WSuper {
    vals: [[[0; 64]; MR]; STEPS],
    scale: [[0.0; PIECES]; MR],
};

/// Quantizes one piece of a row (`x`, at most `ACT_BLOCK` values) into lane `lane` of a
/// super-chunk: its int8 values in the layout, `ncorr` and scale. Unsafe because SIMD versions
/// may only run where their ISA is available.
pub(crate) type QuantizePiece = unsafe fn(&[f32], &mut ActSuper, usize);

/// The portable [`QuantizePiece`] (`act::quantize_piece`'s arithmetic).
pub(crate) unsafe fn quantize_piece_scalar(x: &[f32], dst: &mut ActSuper, lane: usize) {
    let mut q = [0i8; ACT_BLOCK];
    let q = &mut q[..x.len()];
    dst.scale[lane] = quantize_piece(x, q);
    dst.ncorr[lane] = -128 * q.iter().map(|&v| v as i32).sum::<i32>();
    for (k, &v) in q.iter().enumerate() {
        let (d, e, h) = (k / 8, k % 8 / 2, k % 2);
        dst.vals[2 * d + h][4 * lane + e] = v;
    }
}

/// Activations quantized for this path, `n` rows of `supers` super-chunks.
#[derive(Debug)]
pub(crate) struct PanelActs {
    pub supers: usize,
    pub data: Vec<ActSuper>,
    /// The weight block of each piece, `[supers * PIECES]`; past the row, `blocks_per_row`
    /// (where the decoders keep a zero scale).
    pub piece_block: Vec<i32>,
}

impl PanelActs {
    /// Quantizes `x` (`[n, cols]`) with the fast mode's pieces for weight blocks of `block`,
    /// each piece by `quantize`. Safety: `quantize` belongs to an ISA this CPU has.
    pub unsafe fn new(
        x: &[f32],
        n: usize,
        cols: usize,
        block: usize,
        quantize: QuantizePiece,
    ) -> Self {
        let supers = cols.div_ceil(SUPER);
        let pieces = pieces(cols, block);
        let mut data = vec![EMPTY_ACT; n * supers];
        let fill = |(j, out): (usize, &mut [ActSuper])| {
            let xr = &x[j * cols..(j + 1) * cols];
            for p in &pieces {
                let (s, lane) = (p.start / SUPER, p.start % SUPER / ACT_BLOCK);
                // SAFETY: the caller's contract.
                unsafe { quantize(&xr[p.start..p.start + p.len], &mut out[s], lane) };
            }
        };
        if supers > 0 {
            if n >= 4 {
                data.par_chunks_mut(supers).enumerate().for_each(fill);
            } else {
                data.chunks_mut(supers).enumerate().for_each(fill);
            }
        }
        let blocks = cols.div_ceil(block);
        let piece_block = (0..supers * PIECES)
            .map(|p| (p * ACT_BLOCK / block).min(blocks) as i32)
            .collect();
        PanelActs {
            supers,
            data,
            piece_block,
        }
    }

    /// Super-chunks of activation row `j`.
    pub fn row(&self, j: usize) -> &[ActSuper] {
        &self.data[j * self.supers..(j + 1) * self.supers]
    }
}

/// The sum of 16 lanes, pairwise (every path reduces in this order).
#[inline]
pub(crate) fn lane_sum(v: &[f32; PIECES]) -> f32 {
    let mut w = *v;
    let mut half = PIECES / 2;
    while half > 0 {
        for k in 0..half {
            w[k] += w[k + half];
        }
        half /= 2;
    }
    w[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout: step `2d + h`, lane `L`, byte `e` holds element `32 L + 8 d + 2 e + h`.
    #[test]
    fn activations_land_in_their_pieces_lanes() {
        let cols = 600;
        // Distinct small integers, exactly representable after the piece scaling below.
        let x: Vec<f32> = (0..cols).map(|c| ((c % 32) as f32) - 10.0).collect();
        // SAFETY: the portable quantizer runs anywhere.
        let a = unsafe { PanelActs::new(&x, 1, cols, 32, quantize_piece_scalar) };
        assert_eq!(a.supers, 2);
        for (c, &want) in x.iter().enumerate() {
            let (s, lane, k) = (c / SUPER, c % SUPER / 32, c % 32);
            let (d, e, h) = (k / 8, k % 8 / 2, k % 2);
            let v = a.row(0)[s].vals[2 * d + h][4 * lane + e] as f32 * a.row(0)[s].scale[lane];
            assert!((v - want).abs() <= 0.5 * a.row(0)[s].scale[lane], "{c}");
        }
        // Past the row: zero values and scales.
        let last = &a.row(0)[1];
        assert!(last.scale[(cols - SUPER).div_ceil(32)..]
            .iter()
            .all(|&s| s == 0.0));
    }
}
