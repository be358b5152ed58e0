//! Tables with the least squared error by Lloyd's algorithm: Lloyd-Max on the density of
//! block-absmax-normalised Student-t values (`sf4_opt`), and weighted k-means on a matrix's own
//! block-normalised values (the learned per-tensor tables).
//!
//! Both run on weighted points on a line, sorted once, with prefix sums of the weights and of
//! weight times value: one Lloyd step (cells between midpoints of neighbouring levels, each free
//! level moved to its cell's weighted mean) then costs O(levels · log points), so iterating to
//! convergence is cheap next to the sort.

use crate::generate::{quantile, quantile_table, SF4_OFFSET};
use crate::{BlockQuantizer, Codebook, FormatError};
use std::sync::Mutex;

/// Lloyd stops when no level moves by more than this, or after [`MAX_ITERATIONS`].
pub const TOLERANCE: f64 = 1e-9;
/// The most Lloyd steps taken.
pub const MAX_ITERATIONS: usize = 10_000;

/// Weighted points on a line, sorted, with prefix sums of `w` and `w x`.
#[derive(Debug, Clone)]
pub struct WeightedPoints {
    x: Vec<f64>,
    cum_w: Vec<f64>,
    cum_wx: Vec<f64>,
    cum_wxx: Vec<f64>,
}

impl WeightedPoints {
    /// The points `(x, w)` with a positive finite weight and a finite position, sorted.
    pub fn new(points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut p: Vec<(f64, f64)> = points
            .into_iter()
            .filter(|&(x, w)| x.is_finite() && w.is_finite() && w > 0.0)
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut cum_w = Vec::with_capacity(p.len() + 1);
        let mut cum_wx = Vec::with_capacity(p.len() + 1);
        let mut cum_wxx = Vec::with_capacity(p.len() + 1);
        let (mut sw, mut swx, mut swxx) = (0.0, 0.0, 0.0);
        cum_w.push(0.0);
        cum_wx.push(0.0);
        cum_wxx.push(0.0);
        for &(x, w) in &p {
            sw += w;
            swx += w * x;
            swxx += w * x * x;
            cum_w.push(sw);
            cum_wx.push(swx);
            cum_wxx.push(swxx);
        }
        Self {
            x: p.into_iter().map(|q| q.0).collect(),
            cum_w,
            cum_wx,
            cum_wxx,
        }
    }

    /// How many points carry weight.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Whether no point carries weight.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// The weighted mean squared distance of the points to their nearest of `levels`
    /// (ascending).
    pub fn mean_sq_error(&self, levels: &[f64]) -> f64 {
        let (mut err, mut lo) = (0.0, 0);
        for (i, &l) in levels.iter().enumerate() {
            let hi = match levels.get(i + 1) {
                Some(up) => self.x.partition_point(|&x| x < 0.5 * (l + up)),
                None => self.x.len(),
            };
            let w = self.cum_w[hi] - self.cum_w[lo];
            let wx = self.cum_wx[hi] - self.cum_wx[lo];
            let wxx = self.cum_wxx[hi] - self.cum_wxx[lo];
            err += wxx - 2.0 * l * wx + l * l * w;
            lo = hi;
        }
        err / self
            .cum_w
            .last()
            .copied()
            .unwrap_or(0.0)
            .max(f64::MIN_POSITIVE)
    }

    /// Lloyd's algorithm from `init` (ascending): levels where `fixed` is true stay put, the
    /// others move to the weighted mean of the points nearer to them than to their neighbours
    /// (a point exactly on a midpoint belongs to the upper cell) until none moves by more than
    /// [`TOLERANCE`]. A level whose cell is empty stays where it is. Levels keep their order.
    pub fn lloyd(&self, init: &[f64], fixed: &[bool]) -> Vec<f64> {
        let index = |b: f64| self.x.partition_point(|&x| x < b);
        lloyd_cells(init, fixed, |a, b| {
            let (lo, hi) = (
                if a == f64::NEG_INFINITY { 0 } else { index(a) },
                if b == f64::INFINITY {
                    self.x.len()
                } else {
                    index(b)
                },
            );
            (
                self.cum_w[hi] - self.cum_w[lo],
                self.cum_wx[hi] - self.cum_wx[lo],
            )
        })
    }
}

/// Lloyd's iteration given each cell's mass and first moment between two boundaries (the
/// outermost cells open to ±infinity).
fn lloyd_cells(init: &[f64], fixed: &[bool], cell: impl Fn(f64, f64) -> (f64, f64)) -> Vec<f64> {
    assert_eq!(init.len(), fixed.len(), "one fixed flag per level");
    debug_assert!(init.windows(2).all(|w| w[0] < w[1]), "ascending levels");
    let mut levels = init.to_vec();
    let mut next = levels.clone();
    for _ in 0..MAX_ITERATIONS {
        let mut moved = 0.0f64;
        let mut lo = f64::NEG_INFINITY;
        for i in 0..levels.len() {
            let hi = levels
                .get(i + 1)
                .map_or(f64::INFINITY, |up| 0.5 * (levels[i] + up));
            let (w, wx) = cell(lo, hi);
            next[i] = if fixed[i] || w <= 0.0 {
                levels[i]
            } else {
                wx / w
            };
            moved = moved.max((next[i] - levels[i]).abs());
            lo = hi;
        }
        std::mem::swap(&mut levels, &mut next);
        if moved <= TOLERANCE {
            break;
        }
    }
    levels
}

/// A density on [0, 1], constant on each of `q.len()` equal bins. Its cells' masses and moments
/// are exact at any boundary, so Lloyd on it does not stick to a grid (Lloyd on the bins'
/// midpoints as points does: the levels stop where no midpoint changes cell, off the optimum by
/// up to 1e-3 for a 4096-bin table).
#[derive(Debug, Clone)]
pub struct BinnedDensity {
    q: Vec<f64>,
    cum_w: Vec<f64>,
    cum_wx: Vec<f64>,
    cum_wxx: Vec<f64>,
}

impl BinnedDensity {
    /// The density with value `q[j]` on bin `j` (not necessarily normalised).
    pub fn new(q: Vec<f64>) -> Self {
        let d = 1.0 / q.len() as f64;
        let (mut cum_w, mut cum_wx, mut cum_wxx) = (vec![0.0], vec![0.0], vec![0.0]);
        for (j, &v) in q.iter().enumerate() {
            let (a, b) = (j as f64 * d, (j + 1) as f64 * d);
            cum_w.push(cum_w[j] + v * (b - a));
            cum_wx.push(cum_wx[j] + v * (b * b - a * a) / 2.0);
            cum_wxx.push(cum_wxx[j] + v * (b * b * b - a * a * a) / 3.0);
        }
        Self {
            q,
            cum_w,
            cum_wx,
            cum_wxx,
        }
    }

    /// Mass, first and second moment below `b`.
    fn below(&self, b: f64) -> (f64, f64, f64) {
        let g = self.q.len();
        let b = b.clamp(0.0, 1.0);
        let k = ((b * g as f64) as usize).min(g - 1);
        let a = k as f64 / g as f64;
        let v = self.q[k];
        (
            self.cum_w[k] + v * (b - a),
            self.cum_wx[k] + v * (b * b - a * a) / 2.0,
            self.cum_wxx[k] + v * (b * b * b - a * a * a) / 3.0,
        )
    }

    /// Lloyd's algorithm from `init` (ascending) on this density, `fixed` levels staying put
    /// (see [`WeightedPoints::lloyd`]).
    pub fn lloyd(&self, init: &[f64], fixed: &[bool]) -> Vec<f64> {
        lloyd_cells(init, fixed, |a, b| {
            let (lo, hi) = (self.below(a), self.below(b));
            (hi.0 - lo.0, hi.1 - lo.1)
        })
    }

    /// The mean squared distance to the nearest of `levels` (ascending) under this density.
    pub fn mean_sq_error(&self, levels: &[f64]) -> f64 {
        let mut err = 0.0;
        let mut lo = self.below(0.0);
        for (i, &l) in levels.iter().enumerate() {
            let hi = self.below(levels.get(i + 1).map_or(1.0, |up| 0.5 * (l + up)));
            let (w, wx, wxx) = (hi.0 - lo.0, hi.1 - lo.1, hi.2 - lo.2);
            err += wxx - 2.0 * l * wx + l * l * w;
            lo = hi;
        }
        err / self
            .cum_w
            .last()
            .copied()
            .unwrap_or(0.0)
            .max(f64::MIN_POSITIVE)
    }
}

/// The Lloyd-Max table for the values of blocks of `block` Student-t (`nu`) variables, each
/// divided by its block's largest magnitude, symmetric about zero as the density is: the
/// magnitudes `start` (ascending, positive, ending at 1, which stays fixed: the block's extreme
/// always lands on ±1) move by Lloyd on the density of `|Y|`, and the table is their negatives
/// and themselves, `2 · start.len()` values. (Lloyd from an asymmetric start with a zero level,
/// like SF4's, drifts towards this table too slowly to converge; on the density its error is
/// within a few parts in 10^5 of this one.)
///
/// Method: for `n = block` iid variables with density `f`, `|X|`'s CDF `G`, the absmax `M` and a
/// non-extreme element `X`, the density of `Y = X / M` on (-1, 1) is
/// `q(y) = n/(n-1) ∫_0^1 m(v) f(y m(v)) dv` with `m(v) = G^-1(v^(1/(n-1)))` (the absmax's
/// density `n g G^(n-1)` after the substitution `v = G(m)^(n-1)`, which flattens it). The extreme
/// element itself sits on ±1 and costs nothing. `q` is integrated by the midpoint rule on
/// [`DENSITY_NODES`] nodes in `v` at the midpoints of [`DENSITY_GRID`] bins of (0, 1), taken as
/// constant on each bin ([`BinnedDensity`]); Lloyd runs on that density. Scale does not matter (the absmax divides it out), so the table
/// depends on `nu` and `block` only.
pub fn block_absmax_lloyd_max(nu: f64, block: usize, start: &[f64]) -> Vec<f64> {
    symmetric_lloyd_max(&block_absmax_density(nu, block), start)
}

/// Lloyd on the magnitudes' density `density` from the magnitudes `start` (the last fixed),
/// mirrored into a symmetric table.
pub fn symmetric_lloyd_max(density: &BinnedDensity, start: &[f64]) -> Vec<f64> {
    let points = density;
    let last = start.len() - 1;
    let fixed: Vec<bool> = (0..start.len()).map(|i| i == last).collect();
    let half = points.lloyd(start, &fixed);
    half.iter()
        .rev()
        .map(|v| -v)
        .chain(half.iter().copied())
        .collect()
}

/// Nodes of the integral over the absmax in [`block_absmax_lloyd_max`].
pub const DENSITY_NODES: usize = 2048;
/// Points of (0, 1) the normalised density is tabulated on.
pub const DENSITY_GRID: usize = 1024;

/// The density of the magnitude of a non-extreme block-normalised value (see
/// [`block_absmax_lloyd_max`]) on (0, 1), binned.
pub fn block_absmax_density(nu: f64, block: usize) -> BinnedDensity {
    block_absmax_density_with(nu, block, DENSITY_NODES, DENSITY_GRID)
}

/// [`block_absmax_density`] with `nodes` quadrature nodes and `bins` bins.
pub fn block_absmax_density_with(
    nu: f64,
    block: usize,
    nodes: usize,
    bins: usize,
) -> BinnedDensity {
    let n = block.max(2) as f64;
    // m(v): the quantile of |X| at u = v^(1/(n-1)), i.e. the t quantile at 1 - (1 - u) / 2,
    // with 1 - u computed as -expm1(ln v / (n-1)) so the far tail keeps its precision.
    let m: Vec<f64> = (0..nodes)
        .map(|k| {
            let v = (k as f64 + 0.5) / nodes as f64;
            let one_minus_u = -(v.ln() / (n - 1.0)).exp_m1();
            quantile(1.0 - 0.5 * one_minus_u, Some(nu))
        })
        .collect();
    // The t density up to its constant, which Lloyd does not need.
    let half = 0.5 * (nu + 1.0);
    let f = |x: f64| (-half * (x * x / nu).ln_1p()).exp();
    let q = (0..bins)
        .map(|j| {
            let y = (j as f64 + 0.5) / bins as f64;
            m.iter().map(|&m| m * f(y * m)).sum::<f64>()
        })
        .collect();
    BinnedDensity::new(q)
}

/// Each value of a row-major `[rows, cols]` matrix divided by its block's scale `s` under the
/// absmax rule for a table whose largest magnitude is 1 (so each block's extreme lands on ±1
/// up to the scale dtype's rounding), weighted by `s²` (its error in the matrix is `s²` times
/// its error in the table) times `col_weights[col]` (1 without); blocks of zeros are left out.
pub fn block_normalised_points(
    q: &BlockQuantizer,
    values: &[f32],
    rows: usize,
    cols: usize,
    col_weights: Option<&[f64]>,
) -> Result<WeightedPoints, FormatError> {
    crate::block::check_matrix_len(values.len(), rows, cols)?;
    let unit = Codebook::new(vec![-1.0, 1.0])?;
    let block = q.block.len_for(cols);
    let mut points = Vec::with_capacity(values.len());
    for row in values.chunks(cols) {
        for (b, chunk) in row.chunks(block).enumerate() {
            let s = q.block_scale(&unit, chunk);
            if s == 0.0 || !s.is_finite() {
                continue;
            }
            for (i, &v) in chunk.iter().enumerate() {
                let w = col_weights.map_or(1.0, |c| c[b * block + i]) * (s as f64).powi(2);
                points.push(((v / s) as f64, w));
            }
        }
    }
    Ok(WeightedPoints::new(points))
}

/// The table of `init.len()` values with the least (column-weighted) squared error for `values`
/// quantized block by block with absmax scales ([`block_normalised_points`]), by Lloyd from
/// `init` (ascending, ending at -1 and +1, which stay fixed so every block keeps its scale: each
/// step then lowers the matrix's error). Deterministic: the same matrix, weights and start give
/// the same table.
pub fn learn_table(
    q: &BlockQuantizer,
    values: &[f32],
    rows: usize,
    cols: usize,
    col_weights: Option<&[f64]>,
    init: &[f32],
) -> Result<Vec<f32>, FormatError> {
    let points = block_normalised_points(q, values, rows, cols, col_weights)?;
    let start: Vec<f64> = init.iter().map(|&v| v as f64).collect();
    let last = start.len() - 1;
    let fixed: Vec<bool> = (0..start.len()).map(|i| i == 0 || i == last).collect();
    let levels = points.lloyd(&start, &fixed);
    Ok(distinct_f32(&levels))
}

/// A table per row: [`learn_table`] on each row of `values` alone (its blocks' points, the same
/// column weights and start), `rows * init.len()` values, row by row; rows run in parallel.
pub fn learn_row_tables(
    q: &BlockQuantizer,
    values: &[f32],
    rows: usize,
    cols: usize,
    col_weights: Option<&[f64]>,
    init: &[f32],
) -> Result<Vec<f32>, FormatError> {
    use rayon::prelude::*;
    crate::block::check_matrix_len(values.len(), rows, cols)?;
    if cols == 0 {
        return Ok(init.repeat(rows));
    }
    let tables = values
        .par_chunks(cols)
        .map(|row| learn_table(q, row, 1, cols, col_weights, init))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(tables.concat())
}

/// Levels as f32, nudged apart where two would round to the same value (a table needs its codes
/// to differ to use them all).
fn distinct_f32(levels: &[f64]) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(levels.len());
    for &l in levels {
        let mut v = l as f32;
        if let Some(&prev) = out.last() {
            if v <= prev {
                v = next_up(prev);
            }
        }
        out.push(v);
    }
    out
}

/// The next f32 above `p` (+0 after the negative values, never -0).
fn next_up(p: f32) -> f32 {
    let v = if p == 0.0 {
        f32::from_bits(1)
    } else if p > 0.0 {
        f32::from_bits(p.to_bits() + 1)
    } else {
        f32::from_bits(p.to_bits() - 1)
    };
    if v == 0.0 {
        0.0
    } else {
        v
    }
}

/// The block length `sf4_opt` tables are made for (tquant's default block).
pub const SF4_OPT_BLOCK: usize = 64;

/// The `sf4_opt` table of `nu`: [`block_absmax_lloyd_max`] for blocks of [`SF4_OPT_BLOCK`],
/// starting from the magnitudes of SF4's positive half of the same nu; computed once per nu and
/// kept.
pub fn sf4_opt_table(nu: f64) -> Result<Vec<f32>, FormatError> {
    static CACHE: Mutex<Vec<(u64, Vec<f32>)>> = Mutex::new(Vec::new());
    if let Some((_, t)) = CACHE
        .lock()
        .expect("cache lock")
        .iter()
        .find(|(k, _)| *k == nu.to_bits())
    {
        return Ok(t.clone());
    }
    if nu.is_nan() || nu <= 0.0 {
        return Err(FormatError::Nu { nu });
    }
    // SF4's table (the paper's Algorithm 1), its zero and positive half.
    let sf4 = quantile_table(Some(nu), 8, 7, SF4_OFFSET);
    let init: Vec<f64> = sf4[8..].iter().map(|&v| v as f64).collect();
    let table = distinct_f32(&block_absmax_lloyd_max(nu, SF4_OPT_BLOCK, &init));
    let mut cache = CACHE.lock().expect("cache lock");
    if cache.len() >= 64 {
        cache.remove(0);
    }
    cache.push((nu.to_bits(), table.clone()));
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockSize, ScaleDtype};

    #[test]
    fn lloyd_on_two_clusters_finds_their_means_and_keeps_fixed_levels() {
        let pts =
            WeightedPoints::new([(-1.0, 1.0), (-0.9, 1.0), (0.1, 1.0), (0.3, 3.0), (1.0, 1.0)]);
        let l = pts.lloyd(&[-1.0, -0.5, 0.5, 1.0], &[true, false, false, true]);
        // -0.9 is nearer -1 than -0.5 at first; -0.5's cell empties and it stays.
        assert_eq!(l[0], -1.0);
        assert_eq!(l[3], 1.0);
        assert!((l[2] - 0.25).abs() < 1e-12, "{l:?}");
    }

    #[test]
    fn learned_tables_keep_the_ends_and_never_lose_to_their_start() {
        let mut rng = crate::sample::Rng::new(7);
        let (rows, cols) = (32, 256);
        let w = rng.student_t_vec(rows * cols, 4.0);
        let q = BlockQuantizer {
            block: BlockSize::Elements(64),
            scale_dtype: ScaleDtype::F16,
        };
        let start = crate::catalog::NF4.to_vec();
        let t = learn_table(&q, &w, rows, cols, None, &start).unwrap();
        assert_eq!((t[0], t[15]), (-1.0, 1.0));
        assert!(t.windows(2).all(|p| p[0] < p[1]));
        let err = |table: &[f32]| {
            let cb = Codebook::new(table.to_vec()).unwrap();
            let m = q.quantize(&cb, &w, rows, cols).unwrap();
            let d = m.dequantize(&cb);
            w.iter()
                .zip(&d)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        assert!(err(&t) < 0.95 * err(&start), "{} {}", err(&t), err(&start));
    }

    #[test]
    fn sf4_opt_is_symmetric_and_cached() {
        let a = sf4_opt_table(5.0).unwrap();
        assert_eq!(a.len(), 16);
        assert_eq!((a[0], a[15]), (-1.0, 1.0));
        assert!((0..16).all(|i| a[i] == -a[15 - i]), "{a:?}");
        assert_eq!(sf4_opt_table(5.0).unwrap(), a);
    }

    #[test]
    fn nudged_levels_stay_distinct() {
        let v = distinct_f32(&[-1.0, 0.1, 0.1 + 1e-12, 1.0]);
        assert!(v[2] > v[1]);
        let z = distinct_f32(&[-1e-50, -1e-50, 0.0, 1.0]);
        assert!(z.windows(2).all(|p| p[0] < p[1]), "{z:?}");
    }
}
