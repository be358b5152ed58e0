//! Activation preparation, done once per call and shared by all weight rows: the fast mode's
//! int8 quantization, and the element orders the SIMD paths read.
//!
//! SIMD element orders (both put the nibbles of a byte run where their activations are):
//! - fast, per 128-element chunk ([`Chunk`]): the 64 even elements, then the 64 odd ones. The low nibbles of
//!   the chunk's 64 code bytes then meet the first half, the high nibbles the second, and int32
//!   lane `L` of a dot product over them holds elements `8L..8L + 8` of the chunk.
//! - exact, per 32-element group: the 16 even elements, then the 16 odd ones.
//!
//! Exact-mode elements past the last whole group stay in natural order (the SIMD kernels take
//! them one by one). The fast mode's chunks cover the whole row, the last one padded with zero
//! activations (so the kernels need no tail: the padding's weights, whatever they are, multiply
//! zero); it also keeps its int8 values in natural order, for the scalar path.

use crate::ACT_BLOCK;
use rayon::prelude::*;

/// A piece of a row that shares one int8 activation scale: `ACT_BLOCK` elements (fewer at the
/// end of a weight block) inside one weight block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub start: usize,
    pub len: usize,
    pub block: usize,
}

/// Elements per fast SIMD chunk and per exact SIMD group.
pub(crate) const CHUNK: usize = 128;
pub(crate) const GROUP: usize = 32;
/// int32 lanes per fast chunk (each covers 8 elements).
pub(crate) const LANES: usize = CHUNK / 8;

/// The pieces of a row of `cols` elements with weight blocks of `block`.
pub(crate) fn pieces(cols: usize, block: usize) -> Vec<Piece> {
    let mut out = Vec::with_capacity(cols.div_ceil(ACT_BLOCK.min(block)) + 1);
    let mut b0 = 0;
    let mut b = 0;
    while b0 < cols {
        let b1 = (b0 + block).min(cols);
        let mut s = b0;
        while s < b1 {
            let len = ACT_BLOCK.min(b1 - s);
            out.push(Piece {
                start: s,
                len,
                block: b,
            });
            s += len;
        }
        b0 = b1;
        b += 1;
    }
    out
}

/// One SIMD chunk of one activation row: 128 int8 values (the 64 even elements, then the 64
/// odd ones), and for each of its 16 int32 lanes (8 elements) the correction and the scale.
/// Kept together so a GEMM tile streams one buffer per activation row.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Chunk {
    pub even: [i8; CHUNK / 2],
    pub odd: [i8; CHUNK / 2],
    /// `-128 *` the sum of the lane's 8 values: starting a lane's accumulator there turns a
    /// dot with `table_i8 + 128` (unsigned, for VNNI) into one with `table_i8`.
    pub ncorr: [i32; LANES],
    /// The scale of the piece the lane lies in.
    pub scale: [f32; LANES],
}

const EMPTY_CHUNK: Chunk = Chunk {
    even: [0; CHUNK / 2],
    odd: [0; CHUNK / 2],
    ncorr: [0; LANES],
    scale: [0.0; LANES],
};

/// Activations quantized for the fast mode, `n` rows.
#[derive(Debug)]
pub(crate) struct FastActs {
    pub cols: usize,
    /// Elements of each row covered by SIMD chunks: 0 for the portable path, else `cols`
    /// rounded up to a multiple of `CHUNK` (the last chunk zero-padded).
    pub main: usize,
    pub pieces: Vec<Piece>,
    /// int8 values in natural order, `[n, cols]`.
    pub xq: Vec<i8>,
    /// Scale of each piece, `[n, pieces.len()]`.
    pub piece_scale: Vec<f32>,
    /// `[n, main / CHUNK]` chunks.
    pub chunks: Vec<Chunk>,
    /// Block index of each lane minus its chunk's first block, `[main / 8]` (same for all rows).
    pub lane_block: Vec<i32>,
    /// First block of each chunk, `[main / CHUNK]`.
    pub chunk_block: Vec<usize>,
    /// For 8-lane vectors: block index of each lane minus its half chunk's first block
    /// (`[main / 8]`), and the first block of each half chunk (`[main / 64]`).
    pub lane_block8: Vec<i32>,
    pub half_block: Vec<usize>,
}

impl FastActs {
    /// Quantizes `x` (`[n, cols]`); `simd` asks for chunks over the whole row, the last one
    /// padded with zero activations (the caller checks the block shape allows it).
    pub fn new(x: &[f32], n: usize, cols: usize, block: usize, simd: bool) -> Self {
        let pieces = pieces(cols, block);
        let main = if simd {
            cols.div_ceil(CHUNK) * CHUNK
        } else {
            0
        };
        let np = pieces.len();
        let nc = main / CHUNK;
        // Rows are independent: quantize them in parallel when there are several.
        let rows: Vec<(Vec<i8>, Vec<f32>, Vec<Chunk>)> = if n >= 4 {
            (0..n)
                .into_par_iter()
                .map(|j| quantize_row(&x[j * cols..(j + 1) * cols], &pieces, main))
                .collect()
        } else {
            (0..n)
                .map(|j| quantize_row(&x[j * cols..(j + 1) * cols], &pieces, main))
                .collect()
        };
        let mut xq = Vec::with_capacity(n * cols);
        let mut piece_scale = Vec::with_capacity(n * np);
        let mut chunks = Vec::with_capacity(n * nc);
        for (q, s, c) in rows {
            xq.extend_from_slice(&q);
            piece_scale.extend_from_slice(&s);
            chunks.extend_from_slice(&c);
        }
        let nl = main / 8;
        // The padding past `cols` counts as the last block: its activations are zero, and a
        // block index past the row's would read scales beyond the row's scale buffer.
        let last = cols.div_ceil(block).max(1) - 1;
        let block_of = |e: usize| (e / block).min(last);
        let mut lane_block = vec![0i32; nl];
        let mut chunk_block = vec![0usize; nc];
        for (c, base) in chunk_block.iter_mut().enumerate() {
            *base = block_of(c * CHUNK);
            for l in 0..LANES {
                lane_block[c * LANES + l] = (block_of(c * CHUNK + 8 * l) - *base) as i32;
            }
        }
        let half_block: Vec<usize> = (0..main / 64).map(|h| block_of(h * 64)).collect();
        let lane_block8 = (0..nl)
            .map(|l| (block_of(8 * l) - half_block[l / 8]) as i32)
            .collect();
        FastActs {
            lane_block8,
            half_block,
            cols,
            main,
            pieces,
            xq,
            piece_scale,
            chunks,
            lane_block,
            chunk_block,
        }
    }

    pub fn row_xq(&self, j: usize) -> &[i8] {
        &self.xq[j * self.cols..(j + 1) * self.cols]
    }
    pub fn row_piece_scale(&self, j: usize) -> &[f32] {
        let np = self.pieces.len();
        &self.piece_scale[j * np..(j + 1) * np]
    }
    pub fn row_chunks(&self, j: usize) -> &[Chunk] {
        let nc = self.main / CHUNK;
        &self.chunks[j * nc..(j + 1) * nc]
    }
}

/// One activation row: its int8 values (natural order), piece scales and SIMD chunks over
/// `main` elements (past the row: zeros).
fn quantize_row(xr: &[f32], pieces: &[Piece], main: usize) -> (Vec<i8>, Vec<f32>, Vec<Chunk>) {
    let mut qr = vec![0i8; xr.len()];
    let mut ps = vec![0.0f32; pieces.len()];
    let mut rc = vec![EMPTY_CHUNK; main / CHUNK];
    for (p, s) in pieces.iter().zip(ps.iter_mut()) {
        *s = quantize_piece(
            &xr[p.start..p.start + p.len],
            &mut qr[p.start..p.start + p.len],
        );
    }
    // Pieces start at multiples of 8 (block starts are multiples of 16 or the row start), so
    // each lane of 8 elements lies in one piece; the lane holding the row's end, partly
    // padding, takes the last piece's scale.
    for (p, &s) in pieces
        .iter()
        .zip(ps.iter())
        .take_while(|(p, _)| p.start < main)
    {
        for l in p.start / 8..(p.start + p.len).div_ceil(8) {
            rc[l / LANES].scale[l % LANES] = s;
        }
    }
    // The last chunk may be partial: what it lacks stays zero (`EMPTY_CHUNK`).
    for (src, dst) in qr.chunks(CHUNK).zip(rc.iter_mut()) {
        for (k, pair) in src.chunks(2).enumerate() {
            dst.even[k] = pair[0];
            dst.odd[k] = pair.get(1).copied().unwrap_or(0);
        }
        for (lane, corr) in src.chunks(8).zip(dst.ncorr.iter_mut()) {
            *corr = -128 * lane.iter().map(|&v| v as i32).sum::<i32>();
        }
    }
    (qr, ps, rc)
}

/// Quantizes one piece to int8 (`round_ties_even(x * 127 / amax)`) and returns its scale
/// `amax / 127`. The reference repeats this arithmetic.
#[inline]
pub(crate) fn quantize_piece(x: &[f32], out: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0f32 / amax;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = round_even(v * inv).clamp(-127.0, 127.0) as i8;
    }
    amax / 127.0
}

/// `v.round_ties_even()` for `|v| < 2^22`, by adding and removing 1.5 * 2^23 (the addition
/// rounds to nearest even). Unlike `round_ties_even`, which needs SSE4.1 and is a library
/// call on baseline x86-64, this vectorizes everywhere.
#[inline(always)]
pub(crate) fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// `x` (`[n, cols]`) with the first `cols / GROUP * GROUP` elements of each row in the exact
/// SIMD group order.
pub(crate) fn exact_order(x: &[f32], n: usize, cols: usize) -> Vec<f32> {
    let main = cols / GROUP * GROUP;
    let mut out = x[..n * cols].to_vec();
    for j in 0..n {
        let src = &x[j * cols..j * cols + main];
        let dst = &mut out[j * cols..j * cols + main];
        for (s, d) in src.chunks_exact(GROUP).zip(dst.chunks_exact_mut(GROUP)) {
            for (e, &v) in s.iter().enumerate() {
                d[(e & 1) * (GROUP / 2) + e / 2] = v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_even_matches_round_ties_even() {
        let mut v = -130.0f32;
        while v <= 130.0 {
            for w in [v, v + 0.5, v - 0.5, f32::from_bits(v.to_bits() + 1)] {
                assert_eq!(round_even(w), w.round_ties_even(), "{w}");
            }
            v += 0.25;
        }
    }

    #[test]
    fn pieces_cover_the_row_inside_blocks() {
        for (cols, block) in [(100, 32), (100, 48), (70, 16), (5, 64), (200, 200), (0, 32)] {
            let p = pieces(cols, block);
            let mut next = 0;
            for q in &p {
                assert_eq!(q.start, next);
                assert!(q.len >= 1 && q.len <= ACT_BLOCK);
                assert_eq!(q.block, q.start / block);
                assert_eq!((q.start + q.len - 1) / block, q.block);
                next += q.len;
            }
            assert_eq!(next, cols);
        }
    }

    #[test]
    fn lane_scales_follow_their_pieces() {
        let cols = 300;
        let x: Vec<f32> = (0..2 * cols)
            .map(|i| (i as f32 * 0.37).sin() * (1 + i % 7) as f32)
            .collect();
        for block in [16, 32, 64, 128, 300] {
            let a = FastActs::new(&x, 2, cols, block, true);
            assert_eq!(a.main, 384);
            for j in 0..2 {
                let chunks = a.row_chunks(j);
                // Past the row the activations are zero.
                assert!(chunks[2].even[(cols - 256) / 2..].iter().all(|&v| v == 0));
                assert!(chunks[2].odd[(cols - 256) / 2..].iter().all(|&v| v == 0));
                for l in 0..cols.div_ceil(8) {
                    let e = l * 8;
                    let pi = a
                        .pieces
                        .iter()
                        .position(|p| p.start <= e && e < p.start + p.len)
                        .unwrap();
                    assert_eq!(
                        a.row_chunks(j)[l / LANES].scale[l % LANES],
                        a.row_piece_scale(j)[pi]
                    );
                }
            }
        }
    }

    #[test]
    fn block_indices_stay_inside_the_row_past_its_end() {
        // A row shorter than a chunk (a whole-row block of 1 to 127 columns) is padded to 128:
        // the padding's lanes must name the row's last block, not blocks past it.
        for (cols, block) in [(1, 1), (7, 7), (33, 48), (100, 100), (300, 300), (129, 64)] {
            let x = vec![1.0f32; cols];
            let a = FastActs::new(&x, 1, cols, block, true);
            let blocks = cols.div_ceil(block);
            for (c, &base) in a.chunk_block.iter().enumerate() {
                for l in 0..LANES {
                    let b = base + a.lane_block[c * LANES + l] as usize;
                    assert!(
                        b < blocks,
                        "cols {cols} block {block}: lane {l} of chunk {c}"
                    );
                }
            }
            for (l, &off) in a.lane_block8.iter().enumerate() {
                let b = a.half_block[l / 8] + off as usize;
                assert!(
                    b < blocks && off < 8,
                    "cols {cols} block {block}: 8-lane {l}"
                );
            }
        }
    }
}
