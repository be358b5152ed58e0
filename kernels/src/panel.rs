//! The fast mode's cache-blocked GEMM (prefill): activations quantized to int8 once per call,
//! each tile of weight rows decoded to int8 table values once per panel of activation rows and
//! reused by every activation row of the panel.
//!
//! Layout: a row is cut into super-chunks of 512 elements, 16 activation pieces of 32 (the
//! shapes this path takes have pieces starting at multiples of 32). A super-chunk is 8 steps of
//! 64 bytes; int32 lane `L` of a step holds 4 elements of piece `L`, so 8 `vpdpbusd` leave each
//! lane with its piece's whole integer dot product and one convert + multiply + FMA per 16
//! pieces applies the activation and weight scales. Step `2d + h`, lane `L`, byte `e` is element
//! `32 L + 8 d + 2 e + h`: the low (`h = 0`) or high nibble of code byte `16 L + 4 d + e` of the
//! super-chunk, so a decoder reads the codes' dwords `4 L + d` (a transpose) and splits nibbles.
//!
//! Weights are stored decoded as `table_i8 + 128` (unsigned, for `vpdpbusd`); each activation
//! lane's accumulator starts at `-128 *` its piece's sum to undo the shift (as in `act`). The
//! AVX2 path, whose int8 dot needs signed weights, stores `table_i8` and skips the correction.
//! Elements past the row are zero activations, so the padding's codes do not matter.
//!
//! [`rows`] is the loop nest every path shares; a path supplies the decoder and the micro-kernel
//! (`MR` weight rows x up to `NB` activation rows over the whole row). `decode_scalar` and
//! `micro_scalar` are the portable twins of the SIMD ones.

use crate::panel_layout::{
    lane_sum, quantize_piece_scalar, ActSuper, PanelActs, QuantizePiece, WSuper, EMPTY_W, MR, NB,
    PIECES, SUPER,
};
use crate::shared_out::SharedOut;
use crate::{Isa, QMatrix, ACT_BLOCK};
use tquant_formats::pack::row_bytes;

/// Fewer activation rows than this keep the row-tile kernels (they decode per tile, which is
/// cheaper when a decoded tile would serve only a few rows).
pub(crate) const MIN_BATCH: usize = 8;
/// Bytes of quantized activations per panel: the panel stays in L2 while every weight tile
/// passes over it.
const PANEL_BYTES: usize = 1 << 20;
/// Most activation rows per panel: more would save little decoding.
pub(crate) const MAX_PANEL: usize = 255;

/// Whether this path can take `q`: every activation piece starts at a multiple of 32.
pub(crate) fn fits(q: &QMatrix) -> bool {
    q.block() % ACT_BLOCK == 0 || q.blocks_per_row() == 1
}

/// Decodes the codes and scales of `rows` into `tile` (one entry per super-chunk), with the
/// pieces' blocks (`PanelActs::piece_block`) and room for a row of scales and 16 zeros.
/// Unsafe because SIMD decoders may only run where their ISA is available.
pub(crate) type Decode = unsafe fn(&QMatrix, [usize; MR], &[i32], &mut [f32], &mut [WSuper]);
/// `MR` weight rows (`tile`) times activation rows `j..j + nb` (`nb <= NB`): each output's sum
/// over the row before the table step, `[row][activation row]`.
pub(crate) type Micro = unsafe fn(&[WSuper], &PanelActs, usize, usize) -> [[f32; NB]; MR];

/// A path's kernels: the activation quantizer, the decoder and the micro-kernel.
pub(crate) type Kernels = (QuantizePiece, Decode, Micro);

/// The kernels of `isa`.
pub(crate) fn kernels(isa: Isa) -> Option<Kernels> {
    match isa {
        Isa::Scalar | Isa::Reference => Some((quantize_piece_scalar, decode_scalar, micro_scalar)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some((
            quantize_piece_scalar,
            crate::x86_64::panel256::decode,
            crate::x86_64::panel256::micro,
        )),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some((
            crate::x86_64::panel512::quantize_piece,
            crate::x86_64::panel512::decode,
            crate::x86_64::panel512::micro,
        )),
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    }
}

/// Rows `r0..r0 + count` of `y` (`[n, rows]`), with a path's decoder and micro-kernel.
/// Safety: both belong to an ISA this CPU has; `y` holds `n * q.rows()` values and no other
/// thread touches these rows meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn rows(
    q: &QMatrix,
    a: &PanelActs,
    n: usize,
    r0: usize,
    count: usize,
    y: &SharedOut,
    decode: Decode,
    micro: Micro,
) {
    let all = q.rows();
    let per_row = (a.supers * std::mem::size_of::<ActSuper>()).max(1);
    // Panels of equal size (in whole micro-kernels): a short last panel would decode every
    // weight tile for a few activation rows.
    let most = (PANEL_BYTES / per_row).clamp(NB, MAX_PANEL);
    let panel = n.div_ceil(n.div_ceil(most)).div_ceil(NB) * NB;
    let mut tile = vec![EMPTY_W; a.supers];
    let mut scratch = vec![0.0f32; q.blocks_per_row() + PIECES];
    for j0 in (0..n).step_by(panel) {
        let j1 = (j0 + panel).min(n);
        for r in (0..count).step_by(MR) {
            let mr = MR.min(count - r);
            // An edge tile repeats its last row; those outputs are not written.
            let rows: [usize; MR] = std::array::from_fn(|m| r0 + r + m.min(mr - 1));
            // SAFETY: the caller's contract.
            unsafe { decode(q, rows, &a.piece_block, &mut scratch, &mut tile) };
            // The next tile's codes and scales are asked for while this one is multiplied, a
            // share per micro-kernel: its rows are one page or less, where the hardware's
            // stream prefetch stops, so each tile's first reads would otherwise wait on memory.
            let next = r0 + r + MR;
            let ahead = MR.min(q.rows().saturating_sub(next));
            let (codes, scales) = if ahead > 0 {
                (q.rows_codes(next, ahead), q.rows_scales(next, ahead))
            } else {
                (&[][..], &[][..])
            };
            let lines = codes.len().div_ceil(LINE) + scales.len().div_ceil(LINE);
            let per_call = lines.div_ceil((j1 - j0).div_ceil(NB));
            let mut line = 0;
            let mut j = j0;
            while j < j1 {
                prefetch_lines(codes, scales, line, per_call);
                line += per_call;
                let nb = NB.min(j1 - j);
                // SAFETY: the caller's contract; `j + nb <= n`.
                let sums = unsafe { micro(&tile, a, j, nb) };
                for (m, sums) in sums.iter().enumerate().take(mr) {
                    for (jj, &s) in sums[..nb].iter().enumerate() {
                        // SAFETY: `j + jj < n` and row `r0 + r + m` is this call's (contract).
                        unsafe {
                            y.write(
                                (j + jj) * all + r0 + r + m,
                                s * q.row_table_step(r0 + r + m),
                            )
                        };
                    }
                }
                j += nb;
            }
        }
    }
}

/// Bytes per cache line.
const LINE: usize = 64;

/// Prefetches `count` cache lines from line `from` on of `codes` followed by `scales` (a hint:
/// nothing is read, and nothing happens off x86-64).
#[inline(always)]
fn prefetch_lines(codes: &[u8], scales: &[u8], from: usize, count: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let code_lines = codes.len().div_ceil(LINE);
        for l in from..from + count {
            let p = if l < code_lines {
                codes[LINE * l..].as_ptr()
            } else if LINE * (l - code_lines) < scales.len() {
                scales[LINE * (l - code_lines)..].as_ptr()
            } else {
                return;
            };
            // SAFETY: `p` points into one of the slices; a prefetch has no architectural effect.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (codes, scales, from, count);
}

/// The portable decoder (see the module's layout).
pub(crate) unsafe fn decode_scalar(
    q: &QMatrix,
    rows: [usize; MR],
    piece_block: &[i32],
    scratch: &mut [f32],
    tile: &mut [WSuper],
) {
    let rb = row_bytes(q.cols());
    let blocks = q.blocks_per_row();
    for (m, &r) in rows.iter().enumerate() {
        let shifted: [u8; 16] = q.row_table_i8(r).map(|v| (v as i16 + 128) as u8);
        let codes = q.row_codes(r);
        crate::scalar::row_scales(q, r, &mut scratch[..blocks]);
        scratch[blocks..].fill(0.0);
        for (s, ws) in tile.iter_mut().enumerate() {
            for (v, &b) in ws.scale[m].iter_mut().zip(&piece_block[s * PIECES..]) {
                *v = scratch[b as usize];
            }
            for lane in 0..PIECES {
                for b in 0..16 {
                    let i = s * SUPER / 2 + 16 * lane + b;
                    let byte = if i < rb { codes[i] } else { 0 };
                    let (d, e) = (b / 4, b % 4);
                    ws.vals[2 * d][m][4 * lane + e] = shifted[(byte & 15) as usize];
                    ws.vals[2 * d + 1][m][4 * lane + e] = shifted[(byte >> 4) as usize];
                }
            }
        }
    }
}

/// The portable micro-kernel: the SIMD ones' arithmetic lane by lane.
pub(crate) unsafe fn micro_scalar(
    tile: &[WSuper],
    a: &PanelActs,
    j: usize,
    nb: usize,
) -> [[f32; NB]; MR] {
    let mut out = [[0.0f32; NB]; MR];
    for jj in 0..nb {
        let x = a.row(j + jj);
        for (m, o) in out.iter_mut().enumerate() {
            let mut acc = [0.0f32; PIECES];
            for (ws, xs) in tile.iter().zip(x) {
                // Element-wise over the 8 steps (vectorizes), then each lane's 4 bytes.
                let mut prod = [0i32; 64];
                for (wt, xt) in ws.vals.iter().zip(&xs.vals) {
                    for ((p, &w), &v) in prod.iter_mut().zip(&wt[m]).zip(xt) {
                        *p += w as i32 * v as i32;
                    }
                }
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let dot = xs.ncorr[lane] + prod[4 * lane..4 * lane + 4].iter().sum::<i32>();
                    *acc += dot as f32 * xs.scale[lane] * ws.scale[m][lane];
                }
            }
            o[jj] = lane_sum(&acc);
        }
    }
    out
}
