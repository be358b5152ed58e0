//! x86-64 paths: AVX2 + FMA and AVX-512, compiled with `#[target_feature]` and chosen at run time.

mod avx2;
mod avx512;
mod bf16;
pub(crate) mod encode;
pub(crate) mod int8;
pub(crate) mod panel256;
pub(crate) mod panel512;
pub(crate) mod screen;

use crate::act::CHUNK;
use crate::isa::{Bf16Rows, F32Rows, Isa, QRows};
use crate::QMatrix;
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

pub(crate) fn exact_kernel(isa: Isa) -> QRows {
    match isa {
        Isa::Avx2 => avx2::exact_rows,
        Isa::Avx512 => avx512::exact_rows,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

pub(crate) fn fast_kernel(isa: Isa) -> QRows {
    match isa {
        Isa::Avx2 => avx2::fast_rows,
        Isa::Avx512 => avx512::fast_rows,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

/// The bf16-weight kernel of `isa`: `dot` picks AVX512-BF16's `vdpbf16ps` (fast mode).
pub(crate) fn bf16_kernel(isa: Isa, dot: bool) -> Bf16Rows {
    match (isa, dot) {
        (Isa::Avx2, _) => bf16::avx2_rows::<false>,
        (Isa::Avx512, false) => bf16::avx512_rows::<false>,
        (Isa::Avx512, true) => bf16::dot_rows,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

/// The f16-weight kernel of `isa` (`vcvtph2ps` widening).
pub(crate) fn f16_kernel(isa: Isa) -> Bf16Rows {
    match isa {
        Isa::Avx2 => bf16::avx2_rows::<true>,
        Isa::Avx512 => bf16::avx512_rows::<true>,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

pub(crate) fn f32_kernel(isa: Isa) -> F32Rows {
    match isa {
        Isa::Avx2 => avx2::f32_rows,
        Isa::Avx512 => avx512::f32_rows,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

/// Tiles of a row range: `(row, weight rows, activation row, activation rows)`. A GEMV
/// (`n == 1`) takes 4 weight rows at a time; a GEMM `gemm.0` weight rows x `gemm.1` activation
/// rows, so each decoded weight chunk serves several activation rows. Edges take smaller tiles
/// (4, 2 or 1 weight rows; up to 4 activation rows).
pub(crate) fn tiles(
    rows: usize,
    n: usize,
    gemm: (usize, usize),
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (mr_max, nb_max) = if n == 1 { (4, 1) } else { gemm };
    let mut r = 0;
    std::iter::from_fn(move || {
        if r >= rows {
            return None;
        }
        let left = rows - r;
        let mr = [4, 2, 1]
            .into_iter()
            .find(|&m| m <= mr_max && m <= left)
            .unwrap_or(1);
        let start = r;
        r += mr;
        Some((start, mr))
    })
    .flat_map(move |(r, mr)| {
        (0..n)
            .step_by(nb_max)
            .map(move |j| (r, mr, j, nb_max.min(n - j)))
    })
}

/// A tile's `ROWS` parameter: each row reads its own table.
pub(crate) const PER_ROW: bool = true;
/// A tile's `ROWS` parameter: every row reads the matrix's one table.
pub(crate) const SHARED: bool = false;

/// Calls `$f::<MR, NB>(args)` for a tile shape from [`tiles`] (MR in 1, 2, 4; NB in 1..=4).
/// `with_tile!(f, [G], ...)` puts the generic parameters `G` before MR and NB.
macro_rules! with_tile {
    ($f:ident, $mr:expr, $nb:expr, ($($arg:expr),*)) => {
        with_tile!($f, [], $mr, $nb, ($($arg),*))
    };
    ($f:ident, [$($g:ident),*], $mr:expr, $nb:expr, ($($arg:expr),*)) => {
        match ($mr, $nb) {
            (4, 4) => $f::<$($g,)* 4, 4>($($arg),*),
            (4, 3) => $f::<$($g,)* 4, 3>($($arg),*),
            (4, 2) => $f::<$($g,)* 4, 2>($($arg),*),
            (4, _) => $f::<$($g,)* 4, 1>($($arg),*),
            (2, 4) => $f::<$($g,)* 2, 4>($($arg),*),
            (2, 3) => $f::<$($g,)* 2, 3>($($arg),*),
            (2, 2) => $f::<$($g,)* 2, 2>($($arg),*),
            (2, _) => $f::<$($g,)* 2, 1>($($arg),*),
            (_, 4) => $f::<$($g,)* 1, 4>($($arg),*),
            (_, 3) => $f::<$($g,)* 1, 3>($($arg),*),
            (_, 2) => $f::<$($g,)* 1, 2>($($arg),*),
            _ => $f::<$($g,)* 1, 1>($($arg),*),
        }
    };
}
pub(crate) use with_tile;

/// What a tile needs besides the activations: weight rows `r..r + MR` and activation rows
/// `j0..j0 + NB`, the rows' f32 scales (`stride` apart) and where the output goes.
pub(crate) struct Tile<'a, 'q> {
    pub q: &'a QMatrix<'q>,
    pub r0: usize,
    pub r: usize,
    pub j0: usize,
    pub n: usize,
    pub sc: &'a [f32],
    pub stride: usize,
    /// Exact mode: each tile row's weights past the last whole SIMD group (table value times
    /// scale), `tail_len` per row, decoded once per row tile.
    pub tail_f32: &'a [f32],
    pub tail_len: usize,
}

impl Tile<'_, '_> {
    /// Scales of tile row `m` (exactly `blocks_per_row` values).
    pub fn scales(&self, m: usize) -> &[f32] {
        &self.sc[m * self.stride..m * self.stride + self.q.blocks_per_row()]
    }
    /// The decoded exact-mode tail of tile row `m`.
    pub fn tail_f32(&self, m: usize) -> &[f32] {
        &self.tail_f32[m * self.tail_len..(m + 1) * self.tail_len]
    }
    pub fn out_index(&self, m: usize, j: usize) -> usize {
        (self.r + m - self.r0) * self.n + self.j0 + j
    }
}

/// The code bytes of row `r`'s chunk `c` (from element `c * CHUNK`), zero-padded to a whole
/// chunk: for a row that ends inside it.
pub(crate) fn padded_codes(q: &QMatrix, r: usize, c: usize) -> [u8; CHUNK / 2] {
    let mut out = [0u8; CHUNK / 2];
    let rest = q.row_codes(r).get(c * CHUNK / 2..).unwrap_or(&[]);
    let n = rest.len().min(out.len());
    out[..n].copy_from_slice(&rest[..n]);
    out
}

/// A panel of a dense f32 tile: weight rows `r..`, activation rows `j0..`, columns `k0..k1`.
pub(crate) struct F32Tile<'a> {
    pub w: &'a [f32],
    pub x: &'a [f32],
    pub cols: usize,
    pub r: usize,
    pub r0: usize,
    pub j0: usize,
    pub n: usize,
    pub k0: usize,
    pub k1: usize,
}

/// Software prefetch of the weights of the next tile (the rows after this tile's), spread
/// over this tile's loop. A row of 8192 codes is exactly one 4 KiB page, where the hardware
/// prefetchers stop, so streaming GEMV rows from DRAM needs the hint.
#[derive(Clone, Copy)]
pub(crate) struct Prefetch {
    codes: *const u8,
    codes_len: usize,
    scales: *const u8,
    scales_len: usize,
}

impl Prefetch {
    /// For rows `r..r + mr` of `q`, the region of rows `r + mr..r + 2 mr`.
    pub fn next_tile(q: &QMatrix, r: usize, mr: usize) -> Self {
        let rb = q.cols().div_ceil(2);
        let sb = q.blocks_per_row() * q.scale_dtype().size();
        let rows = (q.rows().saturating_sub(r + mr)).min(mr);
        Prefetch {
            codes: q.codes().as_ptr().wrapping_add((r + mr) * rb),
            codes_len: rows * rb,
            scales: q.scales().as_ptr().wrapping_add((r + mr) * sb),
            scales_len: rows * sb,
        }
    }

    /// Step `i` of the loop: the next `lines` cache lines of codes, and one of scales.
    #[inline(always)]
    pub fn step(&self, i: usize, lines: usize) {
        for k in 0..lines {
            let off = (i * lines + k) * 64;
            if off < self.codes_len {
                // SAFETY: a prefetch never faults; the address is inside the codes slice.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(self.codes.wrapping_add(off).cast()) };
            }
        }
        if i * 64 < self.scales_len {
            // SAFETY: as above, inside the scales slice.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.scales.wrapping_add(i * 64).cast()) };
        }
    }
}
