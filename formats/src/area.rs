//! MAC area: the published synthesis figures of Dotzel et al. (ICML 2024, Table 10) kept as data,
//! and a small model that estimates the MAC of any value set, calibrated to that table.
//!
//! The paper synthesised one multiply-accumulate unit per format (Synopsys Design Compiler, TSMC
//! 28nm, an accumulator sized to add 256 products without loss), with both operands in the format.
//! The model sizes the same two parts from the values alone:
//!
//! - **Grid.** The values are scaled to the smallest integer grid `k_i = v_i / q`. The largest
//!   product `K^2` (K = max |k|) fixes the product width; the accumulator adds a sign bit and
//!   `log2(256)` carry bits.
//! - **Multiplier**, the cheaper of two structures: a two's-complement integer multiplier when the
//!   grid fits an `n`-bit integer (`n^2` array cells), or a minifloat one: an `(M+1)^2` mantissa
//!   array plus an aligner that places the product into the fixed-point accumulator (its cost
//!   grows with the product width).
//! - **Lookup** value sets (no small grid: NF4, SF4, most custom tables) decode each code to a
//!   `w`-bit integer first (`w` just fine enough to keep every value within 1/16 of its nearest
//!   gap), then multiply as integers. Table 10 has no lookup format, so the decoder's cost is an
//!   estimate that no published figure checks: each decoded bit of each operand is charged one
//!   multiplier array cell (for 16 entries, scaled by entries / 16).
//!
//! Five coefficients (multiplier: constant, per array cell, per aligner bit; accumulator:
//! constant, per bit) are fitted by least squares to the ten rows of Table 10.

/// Where the published figures come from.
pub const TABLE10_SOURCE: &str = "Dotzel et al., ICML 2024 (arXiv 2405.03103), Table 10: \
     MAC units in SystemVerilog synthesised with Synopsys Design Compiler, TSMC 28nm, \
     accumulator sized for 256 terms";

/// Products a MAC's accumulator must add without loss (the paper's 256-term dot product).
pub const ACCUMULATED_TERMS: u32 = 256;

/// Worst relative error (percent) of the calibrated model's MAC area over the ten rows of Table 10.
pub const MAX_FIT_ERROR_PCT: f64 = 10.5;
/// Worst leave-one-out error (percent): each row predicted by a model fitted to the other nine.
pub const MAX_LOO_ERROR_PCT: f64 = 12.5;

/// One row of the paper's Table 10.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishedMac {
    /// The paper's name of the datatype.
    pub paper_name: &'static str,
    /// Code width in bits (the `bits` of the overhead formula).
    pub bits: u32,
    /// Accumulator width in bits.
    pub acc_bits: u32,
    /// Multiplier area, µm².
    pub mult_um2: f64,
    /// Accumulator area, µm².
    pub acc_um2: f64,
    /// Whole MAC area, µm².
    pub mac_um2: f64,
    /// MAC power, µW.
    pub mac_power_uw: f64,
    /// Relative chip overhead as printed, percent.
    pub overhead_pct: f64,
    /// The value set the row's hardware multiplies (for INT4 the full two's-complement -8..7 the
    /// 4-bit multiplier covers; for INT5 -16..15).
    pub values: &'static [f32],
}

const INT4_HW: [f32; 16] = [
    -8., -7., -6., -5., -4., -3., -2., -1., 0., 1., 2., 3., 4., 5., 6., 7.,
];
const INT5_HW: [f32; 32] = [
    -16., -15., -14., -13., -12., -11., -10., -9., -8., -7., -6., -5., -4., -3., -2., -1., 0., 1.,
    2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.,
];
const E2M1_I: [f32; 8] = [0.0, 0.0625, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
const E2M1_B: [f32; 8] = [0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0];
const E2M1: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
const E2M1_SR: [f32; 9] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0];
const E2M1_SP: [f32; 9] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0];
const E3M0: [f32; 8] = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
const APOT4: [f32; 8] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0];
const APOT4_SP: [f32; 9] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0];

/// Table 10 of the paper, verbatim (sign-symmetric sets are listed by their non-negative half).
pub const TABLE10: [PublishedMac; 10] = [
    row("INT4", 4, 16, 75.3, 85.4, 160.7, 48.5, 0.0, &INT4_HW),
    row("INT5", 5, 18, 106.6, 97.0, 203.6, 59.8, 17.7, &INT5_HW),
    row("E2M1-I", 4, 20, 119.1, 109.1, 228.2, 59.7, 4.2, &E2M1_I),
    row("E2M1-B", 4, 23, 137.9, 131.0, 268.9, 67.9, 6.7, &E2M1_B),
    row("E2M1", 4, 17, 79.7, 90.7, 170.4, 49.6, 0.6, &E2M1),
    row("E2M1+SR", 4, 18, 96.8, 94.5, 191.3, 53.5, 1.9, &E2M1_SR),
    row("E2M1+SP", 4, 19, 121.5, 96.5, 218.0, 54.6, 3.6, &E2M1_SP),
    row("E3M0", 4, 22, 98.0, 119.7, 217.7, 59.5, 3.6, &E3M0),
    row("APoT4", 4, 16, 96.2, 85.4, 181.6, 47.2, 1.3, &APOT4),
    row("APoT4+SP", 4, 16, 99.7, 85.4, 185.1, 45.5, 1.5, &APOT4_SP),
];

#[allow(clippy::too_many_arguments)]
const fn row(
    paper_name: &'static str,
    bits: u32,
    acc_bits: u32,
    mult_um2: f64,
    acc_um2: f64,
    mac_um2: f64,
    mac_power_uw: f64,
    overhead_pct: f64,
    values: &'static [f32],
) -> PublishedMac {
    PublishedMac {
        paper_name,
        bits,
        acc_bits,
        mult_um2,
        acc_um2,
        mac_um2,
        mac_power_uw,
        overhead_pct,
        values,
    }
}

/// The published INT4 MAC, the reference of the overhead formula.
pub fn int4_mac_um2() -> f64 {
    TABLE10[0].mac_um2
}

/// The Table 10 row of a catalog format name (`int4_full` shares INT4's 4-bit multiplier).
pub fn published(format: &str) -> Option<&'static PublishedMac> {
    let paper = match format {
        "int4" | "int4_full" => "INT4",
        "e2m1_i" => "E2M1-I",
        "e2m1_b" => "E2M1-B",
        "e2m1" => "E2M1",
        "e2m1_sr" => "E2M1+SR",
        "e2m1_sp" => "E2M1+SP",
        "e3m0" => "E3M0",
        "apot4" => "APoT4",
        "apot4_sp" => "APoT4+SP",
        _ => return None,
    };
    TABLE10.iter().find(|r| r.paper_name == paper)
}

/// The paper's system overhead, percent: MAC units take 10% of the chip and memory 60%, so
/// `10% x (MAC / MAC_int4 - 1) + 60% x (bits / 4 - 1)`.
pub fn chip_overhead_pct(mac_um2: f64, int4_mac_um2: f64, bits: u32) -> f64 {
    10.0 * (mac_um2 / int4_mac_um2 - 1.0) + 60.0 * (bits as f64 / 4.0 - 1.0)
}

/// How the model builds a value set's multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multiplier {
    /// Two's-complement `width` x `width` integer multiplier.
    Integer {
        /// Operand width in bits.
        width: u32,
    },
    /// Minifloat: `(mantissa_bits + 1)^2` array, exponent adder and an aligner into
    /// `aligner_bits` fixed-point bits.
    Float {
        /// Mantissa bits of the value set.
        mantissa_bits: u32,
        /// Fixed-point bits the aligner shifts products into.
        aligner_bits: u32,
    },
    /// A decoder from `entries` codes to `width`-bit integers, then an integer multiplier.
    Lookup {
        /// Width of the decoded integers.
        width: u32,
        /// Codes decoded.
        entries: u32,
    },
}

impl Multiplier {
    /// Short description for tables.
    pub fn describe(&self) -> String {
        match *self {
            Self::Integer { width } => format!("int {width}x{width}"),
            Self::Float {
                mantissa_bits,
                aligner_bits,
            } => format!("float m{mantissa_bits}, aligner {aligner_bits} b"),
            Self::Lookup { width, entries } => {
                format!("lookup {entries}->int{width} (decoder estimated)")
            }
        }
    }
}

/// What the model derives from a value set before any coefficient is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacShape {
    /// The multiplier the value set needs.
    pub multiplier: Multiplier,
    /// Accumulator width: product magnitude bits + sign + log2(256).
    pub acc_bits: u32,
}

/// A model estimate, in square micrometres of TSMC 28nm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacEstimate {
    /// What the estimate was made from.
    pub shape: MacShape,
    /// Multiplier area.
    pub mult_um2: f64,
    /// Part of `mult_um2` spent on the lookup decoder (0 for grid formats).
    pub decoder_um2: f64,
    /// Accumulator area.
    pub acc_um2: f64,
    /// Whole MAC area (multiplier plus accumulator).
    pub mac_um2: f64,
}

/// The model's coefficients (µm²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// Multiplier area independent of its size.
    pub mult_const: f64,
    /// Area per cell of the multiplier's partial-product array.
    pub per_array_cell: f64,
    /// Area per aligner bit.
    pub per_aligner_bit: f64,
    /// Accumulator area independent of its width.
    pub acc_const: f64,
    /// Area per accumulator bit.
    pub per_acc_bit: f64,
}

/// Largest grid magnitude treated as a grid (products up to 2^24); beyond it, a lookup.
const MAX_GRID: i64 = 1 << 12;

/// The value set on its smallest integer grid: `(q, k)` with `values[i] = q * k[i]`, or `None`
/// when no grid with `|k| <= 4096` and a step of the smallest magnitude / 1..64 fits.
pub fn integer_grid(values: &[f32]) -> Option<(f64, Vec<i64>)> {
    let min = values
        .iter()
        .map(|v| (*v as f64).abs())
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return None;
    }
    (1..=64).find_map(|d| {
        let q = min / d as f64;
        let k: Option<Vec<i64>> = values
            .iter()
            .map(|&v| {
                let x = v as f64 / q;
                let r = x.round();
                (r.abs() <= MAX_GRID as f64 && (x - r).abs() <= 1e-5 * r.abs().max(1.0))
                    .then_some(r as i64)
            })
            .collect();
        k.map(|k| (q, k))
    })
}

fn bit_length(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Smallest two's-complement width holding every `k`.
fn signed_width(k: &[i64]) -> u32 {
    (1..=32)
        .find(|&n| {
            let lo = -(1i64 << (n - 1));
            let hi = (1i64 << (n - 1)) - 1;
            k.iter().all(|&x| lo <= x && x <= hi)
        })
        .unwrap_or(32)
}

/// Mantissa bits a minifloat needs for every magnitude: highest set bit minus lowest set bit.
fn mantissa_bits(k: &[i64]) -> u32 {
    k.iter()
        .map(|x| x.unsigned_abs())
        .filter(|&m| m > 0)
        .map(|m| (bit_length(m) - 1) - m.trailing_zeros())
        .max()
        .unwrap_or(0)
}

fn acc_bits_for(max_magnitude: u64) -> u32 {
    bit_length(max_magnitude * max_magnitude) + 1 + ACCUMULATED_TERMS.trailing_zeros()
}

/// Width of the integers a lookup table decodes to: the smallest `w` (up to 16) whose grid
/// `max / (2^(w-1) - 1)` moves no value by more than 1/16 of the smallest gap between values.
pub fn lookup_width(values: &[f32]) -> u32 {
    let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let gap = v
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    if max == 0.0 || !gap.is_finite() {
        return 2;
    }
    (2..=16)
        .find(|&w| {
            let levels = ((1u64 << (w - 1)) - 1) as f64;
            let step = max / levels;
            v.iter()
                .all(|x| (x - (x / step).round() * step).abs() <= gap / 16.0)
        })
        .unwrap_or(16)
}

/// Candidate shapes of a value set (the model keeps the cheaper multiplier).
fn candidate_shapes(values: &[f32]) -> Vec<MacShape> {
    match integer_grid(values) {
        Some((_, k)) => {
            let kmax = k.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
            let acc_bits = acc_bits_for(kmax);
            vec![
                MacShape {
                    multiplier: Multiplier::Integer {
                        width: signed_width(&k),
                    },
                    acc_bits,
                },
                MacShape {
                    multiplier: Multiplier::Float {
                        mantissa_bits: mantissa_bits(&k),
                        aligner_bits: bit_length(kmax * kmax) + 1,
                    },
                    acc_bits,
                },
            ]
        }
        None => {
            let width = lookup_width(values);
            vec![MacShape {
                multiplier: Multiplier::Lookup {
                    width,
                    entries: values.len().next_power_of_two() as u32,
                },
                acc_bits: acc_bits_for((1u64 << (width - 1)) - 1),
            }]
        }
    }
}

impl Coefficients {
    fn mult(&self, m: Multiplier) -> (f64, f64) {
        match m {
            Multiplier::Integer { width } => (
                self.mult_const + self.per_array_cell * (width * width) as f64,
                0.0,
            ),
            Multiplier::Float {
                mantissa_bits,
                aligner_bits,
            } => (
                self.mult_const
                    + self.per_array_cell * ((mantissa_bits + 1) * (mantissa_bits + 1)) as f64
                    + self.per_aligner_bit * aligner_bits as f64,
                0.0,
            ),
            Multiplier::Lookup { width, entries } => {
                let decoder = self.per_array_cell * (2 * width) as f64 * entries as f64 / 16.0;
                (
                    decoder + self.mult_const + self.per_array_cell * (width * width) as f64,
                    decoder,
                )
            }
        }
    }

    /// Estimates one shape.
    pub fn estimate_shape(&self, shape: MacShape) -> MacEstimate {
        let (mult_um2, decoder_um2) = self.mult(shape.multiplier);
        let acc_um2 = self.acc_const + self.per_acc_bit * shape.acc_bits as f64;
        MacEstimate {
            shape,
            mult_um2,
            decoder_um2,
            acc_um2,
            mac_um2: mult_um2 + acc_um2,
        }
    }

    /// Estimates the MAC of a value set (in any order, any scale), keeping the cheaper multiplier.
    pub fn estimate(&self, values: &[f32]) -> MacEstimate {
        candidate_shapes(values)
            .into_iter()
            .map(|s| self.estimate_shape(s))
            .min_by(|a, b| a.mult_um2.total_cmp(&b.mult_um2))
            .expect("at least one candidate")
    }
}

/// Least squares `min |X c - y|^2` through the normal equations (tiny, well-conditioned systems).
fn least_squares<const N: usize>(x: &[[f64; N]], y: &[f64]) -> [f64; N] {
    let mut a = [[0.0f64; N]; N];
    let mut b = [0.0f64; N];
    for (row, &yi) in x.iter().zip(y) {
        for i in 0..N {
            b[i] += row[i] * yi;
            for j in 0..N {
                a[i][j] += row[i] * row[j];
            }
        }
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..N {
        let p = (col..N)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, p);
        b.swap(col, p);
        for r in col + 1..N {
            let f = if a[col][col] == 0.0 {
                0.0
            } else {
                a[r][col] / a[col][col]
            };
            let pivot = a[col];
            for (x, p) in a[r][col..].iter_mut().zip(&pivot[col..]) {
                *x -= f * p;
            }
            b[r] -= f * b[col];
        }
    }
    let mut c = [0.0f64; N];
    for i in (0..N).rev() {
        let s: f64 = (i + 1..N).map(|j| a[i][j] * c[j]).sum();
        c[i] = if a[i][i] == 0.0 {
            0.0
        } else {
            (b[i] - s) / a[i][i]
        };
    }
    c
}

fn features(m: Multiplier) -> [f64; 3] {
    match m {
        Multiplier::Integer { width } => [1.0, (width * width) as f64, 0.0],
        Multiplier::Float {
            mantissa_bits,
            aligner_bits,
        } => [
            1.0,
            ((mantissa_bits + 1) * (mantissa_bits + 1)) as f64,
            aligner_bits as f64,
        ],
        // Lookup rows never calibrate (Table 10 has none); priced like an integer multiplier.
        Multiplier::Lookup { width, .. } => [1.0, (width * width) as f64, 0.0],
    }
}

/// Fits the five coefficients to `rows`. The multiplier structure of each row starts as the
/// integer one when the grid fits the code width, and is then re-chosen as the cheaper one under
/// the fitted coefficients until the choice is stable.
pub fn calibrate(rows: &[PublishedMac]) -> Coefficients {
    let shapes: Vec<Vec<MacShape>> = rows.iter().map(|r| candidate_shapes(r.values)).collect();
    let mut choice: Vec<MacShape> = rows
        .iter()
        .zip(&shapes)
        .map(|(r, s)| match s[0].multiplier {
            Multiplier::Integer { width } if width <= r.bits => s[0],
            _ => *s.last().expect("a candidate"),
        })
        .collect();
    let mut coef = fit(rows, &choice);
    for _ in 0..8 {
        let next: Vec<MacShape> = shapes
            .iter()
            .map(|s| {
                *s.iter()
                    .min_by(|a, b| {
                        coef.mult(a.multiplier)
                            .0
                            .total_cmp(&coef.mult(b.multiplier).0)
                    })
                    .expect("a candidate")
            })
            .collect();
        if next == choice {
            break;
        }
        choice = next;
        coef = fit(rows, &choice);
    }
    coef
}

fn fit(rows: &[PublishedMac], shapes: &[MacShape]) -> Coefficients {
    let xm: Vec<[f64; 3]> = shapes.iter().map(|s| features(s.multiplier)).collect();
    let ym: Vec<f64> = rows.iter().map(|r| r.mult_um2).collect();
    let xa: Vec<[f64; 2]> = shapes.iter().map(|s| [1.0, s.acc_bits as f64]).collect();
    let ya: Vec<f64> = rows.iter().map(|r| r.acc_um2).collect();
    let m = least_squares(&xm, &ym);
    let a = least_squares(&xa, &ya);
    Coefficients {
        mult_const: m[0],
        per_array_cell: m[1],
        per_aligner_bit: m[2],
        acc_const: a[0],
        per_acc_bit: a[1],
    }
}

/// The model calibrated to all of Table 10.
pub fn calibrated() -> Coefficients {
    calibrate(&TABLE10)
}

/// One row of the model's check against Table 10.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelCheck {
    /// The paper's row.
    pub published: &'static PublishedMac,
    /// The model's estimate for the same value set.
    pub estimate: MacEstimate,
    /// `(model - published) / published`, percent, of the MAC area.
    pub error_pct: f64,
    /// The same for a model fitted without this row.
    pub loo_error_pct: f64,
}

/// The calibrated model against every row of Table 10, with leave-one-out errors.
pub fn check_against_table10() -> Vec<ModelCheck> {
    let coef = calibrated();
    TABLE10
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let others: Vec<PublishedMac> = TABLE10
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| *r)
                .collect();
            let estimate = coef.estimate(p.values);
            let loo = calibrate(&others).estimate(p.values);
            ModelCheck {
                published: p,
                estimate,
                error_pct: 100.0 * (estimate.mac_um2 - p.mac_um2) / p.mac_um2,
                loo_error_pct: 100.0 * (loo.mac_um2 - p.mac_um2) / p.mac_um2,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    #[test]
    fn published_parts_add_up_to_the_mac() {
        for r in &TABLE10 {
            assert!(
                (r.mult_um2 + r.acc_um2 - r.mac_um2).abs() < 1e-9,
                "{}",
                r.paper_name
            );
        }
    }

    /// Distinct magnitudes of a value set, ascending.
    fn magnitudes(values: &[f32]) -> Vec<f64> {
        let mut m: Vec<f64> = values.iter().map(|v| v.abs() as f64).collect();
        m.sort_by(f64::total_cmp);
        m.dedup();
        m
    }

    /// Whether some scale maps every magnitude of `ours` onto one of `theirs`.
    fn covered(ours: &[f64], theirs: &[f64]) -> bool {
        let top = *ours.last().unwrap();
        theirs.iter().filter(|&&t| t > 0.0).any(|&t| {
            let s = t / top;
            ours.iter()
                .all(|&v| theirs.iter().any(|&w| (v * s - w).abs() <= 1e-6 * t))
        })
    }

    /// `published` must hand each catalog format the row of the hardware that multiplies its own
    /// values: up to scale, the row's value set holds every magnitude of the format's codebook
    /// and at most one more (INT4's two's-complement -8..7 around int4's -7..7); formats without
    /// a synthesised MAC get none.
    #[test]
    fn published_rows_multiply_the_formats_own_values() {
        let mut mapped = 0;
        for f in Format::all() {
            let name = f.to_string();
            let Some(row) = published(&name) else {
                continue;
            };
            mapped += 1;
            let ours = magnitudes(f.codebook().values());
            let theirs = magnitudes(row.values);
            assert!(
                covered(&ours, &theirs) && theirs.len() <= ours.len() + 1,
                "{name} vs {}: {ours:?} {theirs:?}",
                row.paper_name
            );
        }
        assert_eq!(
            mapped, 10,
            "int4, int4_full and the eight other rows but INT5"
        );
        assert_eq!(published("int4_full"), published("int4"));
        assert!(published("nf4").is_none() && published("sf4").is_none());
        assert!(published("no such format").is_none());
        // The check itself tells sets apart: E2M1's values are not E3M0's.
        assert!(!covered(&magnitudes(&E2M1), &magnitudes(&E3M0)));
        assert!(covered(&magnitudes(&E2M1), &magnitudes(&E2M1_SR)));
    }

    /// The printed overheads follow from areas rounded to 0.1 µm²: each must be reachable by the
    /// formula from some MAC and INT4 MAC within +-0.05 of the printed ones, rounded to 0.1%.
    #[test]
    fn overhead_formula_reproduces_the_overhead_column() {
        let int4 = int4_mac_um2();
        for r in &TABLE10 {
            let exact = chip_overhead_pct(r.mac_um2, int4, r.bits);
            let lo = chip_overhead_pct(r.mac_um2 - 0.05, int4 + 0.05, r.bits);
            let hi = chip_overhead_pct(r.mac_um2 + 0.05, int4 - 0.05, r.bits);
            assert!(
                lo <= r.overhead_pct + 0.05 && hi >= r.overhead_pct - 0.05,
                "{}: formula {exact:.3}% cannot print as {}%",
                r.paper_name,
                r.overhead_pct
            );
            assert!((exact - r.overhead_pct).abs() < 0.06, "{}", r.paper_name);
        }
    }

    #[test]
    fn model_accumulator_widths_match_the_lossless_rule() {
        // Rows where the published width is the exact range of the products + sign + 8 bits.
        for name in [
            "INT4", "INT5", "E2M1", "E2M1+SR", "E3M0", "APoT4", "APoT4+SP",
        ] {
            let r = TABLE10.iter().find(|r| r.paper_name == name).unwrap();
            let e = calibrated().estimate(r.values);
            assert_eq!(e.shape.acc_bits, r.acc_bits, "{name}");
        }
    }

    #[test]
    fn model_chooses_the_structures_the_paper_synthesised() {
        let c = calibrated();
        for r in &TABLE10 {
            let m = c.estimate(r.values).shape.multiplier;
            let int = matches!(m, Multiplier::Integer { .. });
            assert_eq!(
                int,
                r.paper_name.starts_with("INT"),
                "{}: {m:?}",
                r.paper_name
            );
        }
        let nf4 = c.estimate(Format::all()[0].codebook().values());
        assert_eq!(
            nf4.shape.multiplier,
            Multiplier::Lookup {
                width: 8,
                entries: 16
            }
        );
        assert!(nf4.decoder_um2 > 0.0 && nf4.mac_um2 > TABLE10[0].mac_um2);
    }

    #[test]
    fn model_errors_stay_within_the_documented_bounds() {
        let checks = check_against_table10();
        let worst = checks.iter().map(|c| c.error_pct.abs()).fold(0.0, f64::max);
        let worst_loo = checks
            .iter()
            .map(|c| c.loo_error_pct.abs())
            .fold(0.0, f64::max);
        assert!(worst <= MAX_FIT_ERROR_PCT, "worst fit error {worst:.2}%");
        assert!(
            worst_loo <= MAX_LOO_ERROR_PCT,
            "worst LOO error {worst_loo:.2}%"
        );
        // And the fit is not trivially loose: the bound is within 1.5 points of the worst error.
        assert!(
            worst > MAX_FIT_ERROR_PCT - 1.5,
            "bound is stale: {worst:.2}%"
        );
    }

    #[test]
    fn model_is_scale_and_order_invariant() {
        let c = calibrated();
        let e = c.estimate(&E2M1);
        let scaled: Vec<f32> = E2M1.iter().rev().map(|v| -v / 6.0).collect();
        assert!((c.estimate(&scaled).mac_um2 - e.mac_um2).abs() < 1e-9);
        let cat: Format = "e2m1".parse().unwrap();
        assert!((c.estimate(cat.codebook().values()).mac_um2 - e.mac_um2).abs() < 1e-9);
    }

    #[test]
    fn every_catalog_format_gets_a_positive_estimate() {
        let c = calibrated();
        for f in Format::all() {
            let e = c.estimate(f.codebook().values());
            assert!(
                e.mac_um2 > 0.0 && e.mult_um2 > 0.0 && e.acc_um2 > 0.0,
                "{f}"
            );
        }
    }

    #[test]
    fn least_squares_recovers_an_exact_line() {
        let x = [[1.0, 1.0], [1.0, 2.0], [1.0, 5.0]];
        let y = [3.0, 5.0, 11.0];
        let c = least_squares(&x, &y);
        assert!((c[0] - 1.0).abs() < 1e-12 && (c[1] - 2.0).abs() < 1e-12);
    }
}
