//! Block scaling: each row is cut into blocks along its length; each block gets one scale.

use crate::encode::{block_extreme, BlockEncode, EncodeTable, PortableEncode};
use crate::pack::{pack_row, row_bytes};
use crate::screen::{PortableScreen, Screen, ScreenTable};
pub use crate::search::block_sq_err;
use crate::search::{SearchScratch, BASE_STEP, SEARCH_STEPS};
use crate::{Codebook, FormatError, ScaleDtype};
use std::fmt;
use std::str::FromStr;

/// Shortest block, in elements.
pub const MIN_BLOCK: usize = 16;
/// Longest block, in elements.
pub const MAX_BLOCK: usize = 4096;

/// How many consecutive elements of a row share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockSize {
    /// `n` elements (16..=4096); a row whose length is not a multiple of `n` ends in a short block.
    Elements(usize),
    /// One scale per row.
    Row,
}

impl BlockSize {
    /// A block of `n` elements; an error outside [`MIN_BLOCK`]..=[`MAX_BLOCK`].
    pub fn new(n: usize) -> Result<Self, FormatError> {
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&n) {
            return Err(FormatError::BlockSize { size: n });
        }
        Ok(Self::Elements(n))
    }

    /// The block length used for rows of `cols` elements (`cols` itself for `Row`, at least 1).
    pub fn len_for(self, cols: usize) -> usize {
        match self {
            Self::Elements(n) => n,
            Self::Row => cols.max(1),
        }
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elements(n) => write!(f, "{n}"),
            Self::Row => f.write_str("row"),
        }
    }
}

impl FromStr for BlockSize {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "row" {
            return Ok(Self::Row);
        }
        let n: usize = s
            .parse()
            .map_err(|_| FormatError::BlockSizeText { text: s.into() })?;
        Self::new(n)
    }
}

/// `len` values must make a row-major `[rows, cols]` matrix (no overflow).
pub fn check_matrix_len(len: usize, rows: usize, cols: usize) -> Result<(), FormatError> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(FormatError::MatrixLength { len, rows, cols });
    }
    Ok(())
}

/// Number of blocks in a row of `cols` elements with blocks of `block` elements.
#[inline]
pub fn blocks_per_row(cols: usize, block: usize) -> usize {
    cols.div_ceil(block)
}

/// A quantized matrix in tquant's layout: packed codes ([`crate::pack`]) and one scale per block,
/// row-major `[rows, blocks_per_row]`, stored as `scale_dtype` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Block length in elements (the row length for whole-row blocks).
    pub block: usize,
    /// How the scales are stored.
    pub scale_dtype: ScaleDtype,
    /// Packed codes, [`crate::pack`] order.
    pub codes: Vec<u8>,
    /// Scales, row-major `[rows, blocks_per_row]`, `scale_dtype` bytes each.
    pub scales: Vec<u8>,
}

/// How each block's scale is chosen.
///
/// The base rule maps the block's largest magnitude onto the table's largest magnitude. For a
/// table whose largest magnitude exists on one side only (`int4_full`: -8 but no +8; `e2m1_sr`:
/// +8 but no -8, see [`Codebook::needs_signed_scale`]) the scale is **signed**: the block's
/// extreme element maps exactly onto that one-sided extreme, and the sign of the scale flips when
/// the two have opposite signs (the paper code's full-range INT4 rule, `scale = -absmax / 8` when
/// the block's extreme is positive). So no block ever clips its own extreme. Symmetric-extreme
/// tables keep `scale = absmax / max|values| > 0`, the paper's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleRule {
    /// The base rule above; one scale per block, no search.
    #[default]
    Absmax,
    /// Per block, the scale with the least squared error among a fixed grid: the base scale times
    /// 0.70, 0.71, ..., 1.10, each rounded to the scale dtype, and for tables that are not
    /// symmetric about zero (NF4, SF4, the supernormal types) the same with the sign flipped,
    /// which moves the finer half of the table to the other side. E8M0 tries the OCP exponent
    /// and its two neighbours. The base scale is tried first and only a strictly smaller error
    /// replaces it, so the result is deterministic and never worse than [`ScaleRule::Absmax`].
    Search,
    /// The smallest power of two at least `absmax / max|values|`, so no element saturates
    /// (MXFP4's "rceil", triton_kernels' `downcast_to_mxfp`: `amax / 6` rounded up to a power
    /// of two), then rounded to the scale dtype (exact for E8M0).
    Rceil,
    /// "Four over six" (NVFP4): per block, the base scale (block extreme onto the table's, 6 for
    /// E2M1) or 1.5 times it (extreme onto 4, finer steps near zero), each rounded to the scale
    /// dtype, whichever gives the smaller squared error; ties keep the base scale.
    FourOverSix,
}

impl ScaleRule {
    /// The general rules, for any table and scale dtype.
    pub const ALL: [ScaleRule; 2] = [Self::Absmax, Self::Search];
    /// The FP4 rules (meant for E2M1: `rceil` with E8M0 scales, `4over6` with E4M3).
    pub const FP4: [ScaleRule; 2] = [Self::Rceil, Self::FourOverSix];

    /// The rule's name (`absmax`, `search`, `rceil`, `4over6`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Absmax => "absmax",
            Self::Search => "search",
            Self::Rceil => "rceil",
            Self::FourOverSix => "4over6",
        }
    }
}

impl fmt::Display for ScaleRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScaleRule {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .chain(Self::FP4)
            .find(|r| r.name() == s)
            .ok_or_else(|| FormatError::UnknownScaleRule { name: s.into() })
    }
}

/// The multipliers of the base scale that [`ScaleRule::Search`] tries, in hundredths.
const SEARCH_PERCENT: std::ops::RangeInclusive<u32> = 70..=110;
/// `pct as f32 / 100.0` for each of [`SEARCH_PERCENT`].
const SEARCH_MULTIPLIERS: [f32; SEARCH_STEPS] = {
    let mut m = [0.0f32; SEARCH_STEPS];
    let mut i = 0;
    while i < SEARCH_STEPS {
        m[i] = (*SEARCH_PERCENT.start() + i as u32) as f32 / 100.0;
        i += 1;
    }
    m
};

/// Options of the block quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQuantizer {
    /// Block length along a row.
    pub block: BlockSize,
    /// How each block's scale is stored.
    pub scale_dtype: ScaleDtype,
}

impl BlockQuantizer {
    /// The base rule's scale of one block (see [`ScaleRule`]), rounded to the scale dtype; 0 for
    /// an all-zero block (it then encodes to zeros). Non-finite elements do not count towards the
    /// scale: NaN encodes to the zero code, infinities to the table's extremes.
    ///
    /// E8M0 follows OCP MX: `2^(floor(log2(absmax)) - floor(log2(max|values|)))`, always positive
    /// (E8M0 has no sign bit; [`BlockQuantizer::check`] rejects tables that need a signed scale).
    /// For E2M1 this is the MX rule; for tables whose largest value is a power of two (NF4 and
    /// SF4's 1.0, APoT4, E3M0) it lets blocks overflow the table by up to 2x, which
    /// [`ScaleRule::Search`] repairs.
    pub fn block_scale(&self, cb: &Codebook, block: &[f32]) -> f32 {
        let (absmax, extreme) = block_extreme(block);
        self.scale_of_extreme(cb, absmax, extreme)
    }

    /// [`BlockQuantizer::block_scale`] from the block's [`block_extreme`].
    fn scale_of_extreme(&self, cb: &Codebook, absmax: f32, extreme: f32) -> f32 {
        if absmax == 0.0 {
            return 0.0;
        }
        match self.scale_dtype {
            ScaleDtype::E8m0 => {
                let e = ScaleDtype::e8m0_exponent(absmax, cb.max_abs());
                crate::scale::e8m0_to_f32((e + 127).clamp(0, 254) as u8)
            }
            d if cb.needs_signed_scale() => d.round(extreme / cb.extreme()),
            d => d.round(absmax / cb.max_abs()),
        }
    }

    /// The scale [`ScaleRule::Search`] picks for one block: bit for bit the choice of
    /// [`BlockQuantizer::searched_block_scale_reference`], found without encoding the block once
    /// per candidate (see [`crate::screen`]), on the portable path.
    pub fn searched_block_scale(&self, cb: &Codebook, block: &[f32]) -> f32 {
        self.searched_block_scale_with(cb, block, &PortableScreen)
    }

    /// [`BlockQuantizer::searched_block_scale`] with the candidates screened by `screen` (a
    /// vectorized one lives in `tquant-kernels`); the same scale whatever the screen.
    pub fn searched_block_scale_with(
        &self,
        cb: &Codebook,
        block: &[f32],
        screen: &dyn Screen,
    ) -> f32 {
        let mut sc = SearchScratch::default();
        let ext = block_extreme(block);
        self.searched_block_scale_in(cb, block, ext, cb.screen_table(), screen, &mut sc)
    }

    /// The search given the block's [`block_extreme`].
    fn searched_block_scale_in(
        &self,
        cb: &Codebook,
        block: &[f32],
        (absmax, extreme): (f32, f32),
        table: Option<&ScreenTable>,
        screen: &dyn Screen,
        sc: &mut SearchScratch,
    ) -> f32 {
        let base = self.scale_of_extreme(cb, absmax, extreme);
        if base == 0.0 {
            return 0.0;
        }
        // E8M0 tries three scales: encoding them is cheaper than screening. Non-finite elements
        // have no place in the screened or sorted sums.
        if self.scale_dtype == ScaleDtype::E8m0 || block.iter().any(|v| !v.is_finite()) {
            return self.searched_block_scale_reference(cb, block);
        }
        let flip = !cb.is_symmetric();
        if let Some(table) = table {
            // Every candidate's magnitude: the two signs give the same ones (each dtype rounds
            // symmetrically), and the base is the one at 100%.
            let d = self.scale_dtype;
            let mut mags = SEARCH_MULTIPLIERS.map(|p| base.abs() * p);
            // f32 scales need no rounding (and store exactly).
            let exact = d == ScaleDtype::F32 || {
                for m in &mut mags {
                    *m = d.round(*m);
                }
                mags.iter().all(|&m| d.round(m) == m)
            };
            if exact && mags[BASE_STEP] == base.abs() && table.accepts(absmax, &mags) {
                return crate::search::screened_scale(cb, table, block, base, &mags, flip, screen);
            }
        }
        let mut cands = [0.0f32; 1 + 2 * SEARCH_STEPS];
        let mut len = 1;
        cands[0] = base;
        self.for_each_search_candidate(cb, base, |s| {
            // A repeat of the previous candidate (or the base) cannot change the choice.
            if s != 0.0 && s.is_finite() && s != base && s != cands[len - 1] {
                cands[len] = s;
                len += 1;
            }
        });
        crate::search::least_error_scale(cb, block, &cands[..len], sc)
    }

    /// The candidate scales of [`ScaleRule::Search`] after the base one, in the order tried:
    /// each rounded to the scale dtype, and only those the dtype stores exactly.
    fn for_each_search_candidate(&self, cb: &Codebook, base: f32, mut f: impl FnMut(f32)) {
        let d = self.scale_dtype;
        if d == ScaleDtype::E8m0 {
            for k in [-1, 1] {
                let s = base * 2f32.powi(k);
                if d.round(s) == s {
                    f(s);
                }
            }
            return;
        }
        let flip = !cb.is_symmetric();
        for sign in [1.0f32, -1.0] {
            if sign < 0.0 && !flip {
                break;
            }
            for pct in SEARCH_PERCENT {
                let s = d.round(sign * base * (pct as f32 / 100.0));
                if d.round(s) == s {
                    f(s);
                }
            }
        }
    }

    /// [`ScaleRule::Search`] as first written: every candidate encoded and its error summed
    /// element by element. Kept as the oracle of [`BlockQuantizer::searched_block_scale`].
    pub fn searched_block_scale_reference(&self, cb: &Codebook, block: &[f32]) -> f32 {
        let base = self.block_scale(cb, block);
        if base == 0.0 {
            return 0.0;
        }
        let mut best = (block_sq_err(cb, block, base), base);
        let mut consider = |s: f32| {
            // Only scales the dtype stores exactly, so the stored scale is the one evaluated.
            if s != 0.0 && s.is_finite() && s != best.1 && self.scale_dtype.round(s) == s {
                let e = block_sq_err(cb, block, s);
                if e < best.0 {
                    best = (e, s);
                }
            }
        };
        if self.scale_dtype == ScaleDtype::E8m0 {
            for k in [-1, 1] {
                consider(base * 2f32.powi(k));
            }
        } else {
            let flip = !cb.is_symmetric();
            for sign in [1.0f32, -1.0] {
                if sign < 0.0 && !flip {
                    break;
                }
                for pct in SEARCH_PERCENT {
                    consider(self.scale_dtype.round(sign * base * (pct as f32 / 100.0)));
                }
            }
        }
        best.1
    }

    /// The scale of one block under `rule`.
    pub fn scale_for(&self, cb: &Codebook, block: &[f32], rule: ScaleRule) -> f32 {
        self.scale_for_with(cb, block, rule, &PortableScreen)
    }

    /// [`BlockQuantizer::scale_for`] with [`ScaleRule::Search`]'s candidates screened by
    /// `screen`; the same scale whatever the screen.
    pub fn scale_for_with(
        &self,
        cb: &Codebook,
        block: &[f32],
        rule: ScaleRule,
        screen: &dyn Screen,
    ) -> f32 {
        match rule {
            ScaleRule::Absmax => self.block_scale(cb, block),
            ScaleRule::Search => self.searched_block_scale_with(cb, block, screen),
            ScaleRule::Rceil => self.rceil_block_scale(cb, block),
            ScaleRule::FourOverSix => self.four_over_six_block_scale(cb, block),
        }
    }

    /// [`ScaleRule::Rceil`]'s scale of one block; 0 for an all-zero block.
    pub fn rceil_block_scale(&self, cb: &Codebook, block: &[f32]) -> f32 {
        let (absmax, extreme) = block_extreme(block);
        if absmax == 0.0 {
            return 0.0;
        }
        let m = absmax / cb.max_abs();
        // Up to the next power of two on the bits (a subnormal m goes to 2^-126).
        let bits = (m.to_bits().saturating_add(0x7f_ffff) & 0x7f80_0000).min(254 << 23);
        let p = f32::from_bits(bits);
        let signed = cb.needs_signed_scale() && (extreme / cb.extreme()) < 0.0;
        let p = if signed { -p } else { p };
        match self.scale_dtype {
            ScaleDtype::E8m0 => crate::scale::e8m0_to_f32((bits >> 23) as u8),
            d => d.round(p),
        }
    }

    /// [`ScaleRule::FourOverSix`]'s scale of one block; 0 for an all-zero block.
    pub fn four_over_six_block_scale(&self, cb: &Codebook, block: &[f32]) -> f32 {
        let (absmax, extreme) = block_extreme(block);
        let six = self.scale_of_extreme(cb, absmax, extreme);
        if six == 0.0 {
            return 0.0;
        }
        // The extreme onto two thirds of the table's (4 of E2M1's 6).
        let four = if cb.needs_signed_scale() {
            extreme / (cb.extreme() / 1.5)
        } else {
            absmax / (cb.max_abs() / 1.5)
        };
        let four = self.scale_dtype.round(four);
        if four != 0.0
            && four.is_finite()
            && block_sq_err(cb, block, four) < block_sq_err(cb, block, six)
        {
            four
        } else {
            six
        }
    }

    /// Whether this codebook can be stored with these options: E8M0 has no sign bit, so tables
    /// that need a signed scale ([`Codebook::needs_signed_scale`]) are refused rather than
    /// quantized with a scale that clips half of every block.
    pub fn check(&self, cb: &Codebook) -> Result<(), FormatError> {
        if self.scale_dtype == ScaleDtype::E8m0 && cb.needs_signed_scale() {
            return Err(FormatError::SignedScale {
                extreme: cb.extreme(),
            });
        }
        Ok(())
    }

    /// Quantizes a row-major `[rows, cols]` matrix with the base rule ([`ScaleRule::Absmax`]).
    pub fn quantize(
        &self,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<QuantizedMatrix, FormatError> {
        self.quantize_with(cb, w, rows, cols, ScaleRule::Absmax)
    }

    /// Quantizes a row-major `[rows, cols]` matrix, choosing each block's scale by `rule`.
    pub fn quantize_with(
        &self,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
        rule: ScaleRule,
    ) -> Result<QuantizedMatrix, FormatError> {
        self.quantize_with_screen(cb, w, rows, cols, rule, &PortableScreen)
    }

    /// [`BlockQuantizer::quantize_with`], screening [`ScaleRule::Search`]'s candidates with
    /// `screen`; the same result whatever the screen.
    pub fn quantize_with_screen(
        &self,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
        rule: ScaleRule,
        screen: &dyn Screen,
    ) -> Result<QuantizedMatrix, FormatError> {
        self.quantize_with_kernels(cb, w, rows, cols, rule, screen, &PortableEncode)
    }

    /// [`BlockQuantizer::quantize_with_screen`] with each block's extreme and codes computed by
    /// `encoder` (a vectorized one lives in `tquant-kernels`); the same result whatever the
    /// screen and encoder.
    #[allow(clippy::too_many_arguments)]
    pub fn quantize_with_kernels(
        &self,
        cb: &Codebook,
        w: &[f32],
        rows: usize,
        cols: usize,
        rule: ScaleRule,
        screen: &dyn Screen,
        encoder: &dyn BlockEncode,
    ) -> Result<QuantizedMatrix, FormatError> {
        check_matrix_len(w.len(), rows, cols)?;
        self.check(cb)?;
        let block = self.block.len_for(cols);
        let nb = blocks_per_row(cols, block);
        let rb = row_bytes(cols);
        let mut codes = vec![0u8; rows * rb];
        let mut scales = Vec::with_capacity(rows * nb * self.scale_dtype.size());
        let mut row_codes = vec![0u8; cols];
        let mut scratch = SearchScratch::default();
        let table = cb.screen_table();
        let enc_table = EncodeTable::new(cb);
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            for (b, chunk) in row.chunks(block).enumerate() {
                let ext = encoder.extreme(chunk);
                let s = match rule {
                    ScaleRule::Absmax => self.scale_of_extreme(cb, ext.0, ext.1),
                    ScaleRule::Search => {
                        self.searched_block_scale_in(cb, chunk, ext, table, screen, &mut scratch)
                    }
                    ScaleRule::Rceil => self.rceil_block_scale(cb, chunk),
                    ScaleRule::FourOverSix => self.four_over_six_block_scale(cb, chunk),
                };
                self.scale_dtype.push_bytes(s, &mut scales);
                let out = &mut row_codes[b * block..b * block + chunk.len()];
                if s == 0.0 || !s.is_finite() {
                    // As `encode_block`.
                    out.fill(cb.encode(0.0));
                } else {
                    encoder.encode_scaled(&enc_table, chunk, s, out);
                }
            }
            pack_row(&row_codes, &mut codes[r * rb..(r + 1) * rb]);
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            block,
            scale_dtype: self.scale_dtype,
            codes,
            scales,
        })
    }
}

/// Encodes one block with a given (already rounded) scale. A zero scale gives the zero code.
pub fn encode_block(cb: &Codebook, block: &[f32], scale: f32, out: &mut [u8]) {
    if scale == 0.0 || !scale.is_finite() {
        out.fill(cb.encode(0.0));
        return;
    }
    // Divide, as every reference does (`w / scale`): `x * (1 / scale)` can differ in the last bit
    // next to a threshold, and 1 / scale overflows for subnormal scales.
    cb.encode_scaled(block, scale, out);
}

impl QuantizedMatrix {
    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        blocks_per_row(self.cols, self.block)
    }

    /// Scale of block `b` of row `r`.
    pub fn scale(&self, r: usize, b: usize) -> f32 {
        self.scale_dtype
            .read(&self.scales, r * self.blocks_per_row() + b)
    }

    /// Dequantizes into a row-major `[rows, cols]` buffer: `values[code] * scale`.
    pub fn dequantize(&self, cb: &Codebook) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        if self.cols == 0 {
            return out;
        }
        // A 16-entry table (codes past a 3-bit table decode to 0, as `values` is shorter).
        let mut table = [0.0f32; 16];
        table[..cb.values().len()].copy_from_slice(cb.values());
        let rb = row_bytes(self.cols);
        for (r, row) in out.chunks_mut(self.cols).enumerate() {
            let packed = &self.codes[r * rb..(r + 1) * rb];
            if self.block % 2 == 1 && self.block < self.cols {
                // Blocks that start mid-byte (only hand-made matrices have odd blocks).
                for (c, o) in row.iter_mut().enumerate() {
                    *o = table[crate::pack::code_at(packed, c) as usize]
                        * self.scale(r, c / self.block);
                }
                continue;
            }
            for (b, chunk) in row.chunks_mut(self.block).enumerate() {
                let s = self.scale(r, b);
                let start = b * self.block; // even here
                let bytes = &packed[start / 2..];
                for (pair, &byte) in chunk.chunks_mut(2).zip(bytes) {
                    pair[0] = table[(byte & 0x0f) as usize] * s;
                    if let Some(hi) = pair.get_mut(1) {
                        *hi = table[(byte >> 4) as usize] * s;
                    }
                }
            }
        }
        out
    }

    /// Storage bits per weight, codes and scales together (codes at 4 bits each).
    pub fn bits_per_weight(&self) -> f64 {
        let n = (self.rows * self.cols) as f64;
        ((self.codes.len() + self.scales.len()) * 8) as f64 / n
    }
}
