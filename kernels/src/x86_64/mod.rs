//! x86-64 paths: AVX2 + FMA and AVX-512, compiled with `#[target_feature]` and chosen at run time.

mod avx2;
mod avx512;

use crate::dispatch::Acts;
use crate::{Isa, QMatrix};

/// Whether each path is built (a path is listed as available only when it is).
pub(crate) const AVX2_READY: bool = true;
pub(crate) const AVX512_READY: bool = true;

type QRows = unsafe fn(&QMatrix, &Acts, usize, usize, &mut [f32]);
type F32Rows = unsafe fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

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

pub(crate) fn f32_kernel(isa: Isa) -> F32Rows {
    match isa {
        Isa::Avx2 => avx2::f32_rows,
        Isa::Avx512 => avx512::f32_rows,
        _ => unreachable!("{isa} has no x86-64 kernel"),
    }
}

/// Tiles of a row range: `(row, weight rows, activation row, activation rows)`. A GEMV
/// (`n == 1`) takes 4 weight rows at a time; a GEMM 2 weight rows x 4 activation rows, so each
/// decoded weight chunk serves 4 activation rows. Edges take smaller tiles.
pub(crate) fn tiles(rows: usize, n: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let (mr_max, nb_max) = if n == 1 { (4, 1) } else { (2, 4) };
    let mut r = 0;
    std::iter::from_fn(move || {
        if r >= rows {
            return None;
        }
        let mr = if rows - r >= mr_max {
            mr_max
        } else if rows - r >= 2 {
            2
        } else {
            1
        };
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
}

impl Tile<'_, '_> {
    /// Scales of tile row `m` (exactly `blocks_per_row` values).
    pub fn scales(&self, m: usize) -> &[f32] {
        &self.sc[m * self.stride..m * self.stride + self.q.blocks_per_row()]
    }
    pub fn out_index(&self, m: usize, j: usize) -> usize {
        (self.r + m - self.r0) * self.n + self.j0 + j
    }
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
