//! The report's rows: one per format, with its measured accuracy, its MAC area (published and
//! modelled), the chip overhead and whether it is on the Pareto frontier of (area, loss).

use serde::Serialize;
use tquant_formats::area::{self, Coefficients, PublishedMac};
use tquant_formats::ScaleRule;

/// What a format measured, before any area column is added.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// The report's name of the variant (`nf4`, `sf4`, `sf4_fit`, `sf4:nu=3`).
    pub format: String,
    /// Code width in bits.
    pub bits: u32,
    /// The codebooks the variant used (one per fitted tensor for `sf4_fit`).
    pub codebooks: Vec<Vec<f32>>,
    /// Bits per weight, scales included.
    pub bits_per_weight: f64,
    /// Weight error: squared error over squared weights.
    pub nmse: f64,
    /// Bits per byte of the text, when measured.
    pub bits_per_byte: Option<f64>,
    /// Summary of the fitted or searched nu over tensors (`sf4_fit`, `sf4_search`).
    pub nu: Option<NuSummary>,
    /// How many matrices got each format family (one entry for a fixed format; what `auto`
    /// chose), by name.
    pub chosen: Vec<Chosen>,
    /// How block scales were chosen.
    pub scale_rule: ScaleRule,
}

/// One format family and the number of matrices quantized with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chosen {
    /// The format family.
    pub format: String,
    /// Matrices quantized with it.
    pub matrices: usize,
}

/// Fitted degrees of freedom across the tensors of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NuSummary {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
    /// Tensors (or experts) fitted.
    pub tensors: usize,
    /// Searched for the least weight error (`sf4_search`), not fitted (`sf4_fit`).
    pub searched: bool,
}

impl NuSummary {
    /// Summary of a non-empty list; `None` when empty.
    pub fn of(mut nus: Vec<f64>) -> Option<Self> {
        if nus.is_empty() {
            return None;
        }
        nus.sort_by(f64::total_cmp);
        let n = nus.len();
        let median = if n % 2 == 1 {
            nus[n / 2]
        } else {
            0.5 * (nus[n / 2 - 1] + nus[n / 2])
        };
        Some(Self {
            min: nus[0],
            median,
            max: nus[n - 1],
            tensors: n,
            searched: false,
        })
    }
}

/// One row of report.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The variant's name.
    pub format: String,
    /// Code width in bits.
    pub bits: u32,
    /// Bits per weight, scales included.
    pub bits_per_weight: f64,
    /// Weight error: squared error over squared weights.
    pub nmse: f64,
    /// Bits per byte of the text, when measured.
    pub bits_per_byte: Option<f64>,
    /// Bits per byte over the unquantized model's.
    pub delta_bits_per_byte: Option<f64>,
    /// Table 10's MAC area, when the paper synthesised this format.
    pub mac_area_um2: Option<f64>,
    /// Table 10's MAC power, when published.
    pub mac_power_uw: Option<f64>,
    /// tquant's area model.
    pub mac_area_model_um2: f64,
    /// `(model - published) / published`, percent, when there is a published figure.
    pub mac_area_model_error_pct: Option<f64>,
    /// How the model builds the multiplier (integer, minifloat, or lookup with an estimated decoder).
    pub mac_structure: String,
    /// Chip area overhead over INT4, percent (`OVERHEAD_RULE`).
    pub chip_overhead_pct: f64,
    /// `published` (Table 10's areas) or `model` (the model's areas relative to its own INT4).
    pub chip_overhead_source: &'static str,
    /// The area the frontier uses: the published one, else the model's.
    pub pareto_area_um2: f64,
    /// The loss the frontier uses: delta bits per byte, or nmse in a weights-only report.
    pub accuracy_loss: f64,
    /// On the Pareto frontier of its bit width.
    pub pareto: bool,
    /// Fitted or searched nu, for Student Float rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nu: Option<NuSummary>,
    /// `absmax` or `search` (the `+search` rows).
    pub scale_rule: &'static str,
    /// The formats the matrices got, with counts (more than one only for `auto` rows).
    pub chosen: Vec<Chosen>,
}

impl Row {
    /// The row as the README's compact table has it: format, nmse, bits/byte, Δ bits/byte,
    /// Table 10's MAC area, the model's, and the chip overhead (marked where it is the model's).
    pub fn summary_line(&self) -> String {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("–".to_string(), f);
        let lookup = if self.mac_structure.contains("lookup") {
            " (lookup)"
        } else {
            ""
        };
        let source = if self.chip_overhead_source == "model" {
            " (model)"
        } else {
            ""
        };
        format!(
            "| {} | {:.5} | {} | {} | {} | {:.1}{lookup} | {:.1}%{source} |",
            self.format,
            self.nmse,
            opt(self.bits_per_byte, &|v| format!("{v:.4}")),
            opt(self.delta_bits_per_byte, &|v| format!("{v:+.4}")),
            opt(self.mac_area_um2, &|v| format!("{v:.1}")),
            self.mac_area_model_um2,
            self.chip_overhead_pct,
        )
    }
}

/// The header of [`Row::summary_line`]'s table.
pub const SUMMARY_HEADER: &str = "| format | nmse | bits/byte | Δ bits/byte | MAC µm² (Table 10) \
     | MAC µm² (model) | chip overhead |\n|---|---:|---:|---:|---:|---:|---:|";

/// Builds the rows: area columns from Table 10 and the model, losses against `baseline_bpb`
/// (`None` in a weights-only report, where the loss is the nmse), and the Pareto flags.
pub fn build_rows(
    measured: &[Measured],
    baseline_bpb: Option<f64>,
    coef: &Coefficients,
) -> Vec<Row> {
    let model_int4 = coef.estimate(area::TABLE10[0].values).mac_um2;
    let mut rows: Vec<Row> = measured
        .iter()
        .map(|m| {
            let published = published_area(m);
            let model = m
                .codebooks
                .iter()
                .map(|cb| coef.estimate(cb))
                .max_by(|a, b| a.mac_um2.total_cmp(&b.mac_um2))
                .expect("every measured format has a codebook");
            let (overhead, source) = match published {
                Some(p) => (
                    area::chip_overhead_pct(p.mac_um2, area::int4_mac_um2(), m.bits),
                    "published",
                ),
                None => (
                    area::chip_overhead_pct(model.mac_um2, model_int4, m.bits),
                    "model",
                ),
            };
            let delta = match (m.bits_per_byte, baseline_bpb) {
                (Some(q), Some(b)) => Some(q - b),
                _ => None,
            };
            Row {
                format: m.format.clone(),
                bits: m.bits,
                bits_per_weight: m.bits_per_weight,
                nmse: m.nmse,
                bits_per_byte: m.bits_per_byte,
                delta_bits_per_byte: delta,
                mac_area_um2: published.map(|p| p.mac_um2),
                mac_power_uw: published.map(|p| p.mac_power_uw),
                mac_area_model_um2: model.mac_um2,
                mac_area_model_error_pct: published
                    .map(|p| 100.0 * (model.mac_um2 - p.mac_um2) / p.mac_um2),
                mac_structure: model.shape.multiplier.describe(),
                chip_overhead_pct: overhead,
                chip_overhead_source: source,
                pareto_area_um2: published.map_or(model.mac_um2, |p| p.mac_um2),
                accuracy_loss: delta.unwrap_or(m.nmse),
                pareto: false,
                nu: m.nu,
                scale_rule: m.scale_rule.name(),
                chosen: m.chosen.clone(),
            }
        })
        .collect();
    let points: Vec<(u32, f64, f64)> = rows
        .iter()
        .map(|r| (r.bits, r.pareto_area_um2, r.accuracy_loss))
        .collect();
    for (r, on) in rows.iter_mut().zip(pareto_front_by_bits(&points)) {
        r.pareto = on;
    }
    rows
}

/// Table 10's figure for the formats a row used: the largest of the chosen formats' areas when
/// every one of them has a published figure (an `auto` row that never chose a lookup format), else
/// none. A fixed format's row has one chosen format, itself.
fn published_area(m: &Measured) -> Option<&'static PublishedMac> {
    let areas: Option<Vec<&PublishedMac>> = m
        .chosen
        .iter()
        .map(|c| area::published(&c.format))
        .collect();
    areas?
        .into_iter()
        .max_by(|a, b| a.mac_um2.total_cmp(&b.mac_um2))
}

/// [`pareto_front`] within each bit width of `(bits, x, y)` points: fewer bits buy area with
/// accuracy, so a 3-bit format is judged against 3-bit formats only.
pub fn pareto_front_by_bits(points: &[(u32, f64, f64)]) -> Vec<bool> {
    let mut on = vec![false; points.len()];
    let mut widths: Vec<u32> = points.iter().map(|p| p.0).collect();
    widths.sort_unstable();
    widths.dedup();
    for bits in widths {
        let idx: Vec<usize> = (0..points.len()).filter(|&i| points[i].0 == bits).collect();
        let xy: Vec<(f64, f64)> = idx.iter().map(|&i| (points[i].1, points[i].2)).collect();
        for (&i, front) in idx.iter().zip(pareto_front(&xy)) {
            on[i] = front;
        }
    }
    on
}

/// Which points no other point dominates (no larger in both coordinates and smaller in one).
/// Points with a NaN coordinate are never on the frontier.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|&(x, y)| {
            !x.is_nan()
                && !y.is_nan()
                && !points
                    .iter()
                    .any(|&(a, b)| a <= x && b <= y && (a < x || b < y))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let p = [
            (1.0, 5.0),
            (2.0, 3.0),
            (3.0, 4.0),
            (4.0, 1.0),
            (2.0, 3.0),
            (5.0, 1.0),
        ];
        assert_eq!(
            pareto_front(&p),
            [true, true, false, true, true, false],
            "(3,4) is beaten by (2,3); (5,1) by (4,1); equal points both stay"
        );
        assert_eq!(pareto_front(&[(1.0, f64::NAN), (2.0, 1.0)]), [false, true]);
    }

    fn measured(format: &str, values: &[f32], bpb: f64) -> Measured {
        Measured {
            format: format.into(),
            bits: 4,
            codebooks: vec![values.to_vec()],
            bits_per_weight: 4.5,
            nmse: 0.01,
            bits_per_byte: Some(bpb),
            nu: None,
            chosen: vec![Chosen {
                format: format.into(),
                matrices: 1,
            }],
            scale_rule: ScaleRule::Absmax,
        }
    }

    #[test]
    fn auto_rows_take_the_largest_area_of_the_formats_chosen() {
        let coef = area::calibrated();
        let int4: Vec<f32> = (-8..=7).map(|v| v as f32).collect();
        let apot: Vec<f32> = "apot4_sp"
            .parse::<tquant_formats::Format>()
            .unwrap()
            .codebook()
            .values()
            .to_vec();
        let mut m = measured("auto", &int4, 1.75);
        m.codebooks.push(apot.clone());
        m.chosen = vec![
            Chosen {
                format: "apot4_sp".into(),
                matrices: 3,
            },
            Chosen {
                format: "int4_full".into(),
                matrices: 5,
            },
        ];
        let rows = build_rows(&[m.clone()], Some(1.7), &coef);
        assert_eq!(rows[0].mac_area_um2, Some(185.1), "APoT4+SP's, the larger");
        let apot_alone = coef.estimate(&apot).mac_um2;
        assert!(rows[0].mac_area_model_um2 >= apot_alone);
        // Once a lookup format is chosen there is no published figure, and the model's area is
        // the lookup MAC's.
        m.chosen.push(Chosen {
            format: "nf4".into(),
            matrices: 1,
        });
        m.codebooks.push(tquant_formats::catalog::NF4.to_vec());
        let rows = build_rows(&[m], Some(1.7), &coef);
        assert_eq!(rows[0].mac_area_um2, None);
        let nf4 = coef.estimate(&tquant_formats::catalog::NF4).mac_um2;
        assert_eq!(rows[0].mac_area_model_um2, nf4);
        assert!(rows[0].mac_structure.contains("lookup"));
    }

    #[test]
    fn rows_carry_published_and_model_areas_and_the_overhead_rule() {
        let coef = area::calibrated();
        let int4: Vec<f32> = (-7..=7).map(|v| v as f32).collect();
        let nf4 = tquant_formats::catalog::NF4.to_vec();
        let rows = build_rows(
            &[measured("int4", &int4, 1.8), measured("nf4", &nf4, 1.75)],
            Some(1.7),
            &coef,
        );
        assert_eq!(rows[0].mac_area_um2, Some(160.7));
        assert_eq!(rows[0].chip_overhead_pct, 0.0);
        assert_eq!(rows[0].chip_overhead_source, "published");
        assert!((rows[0].delta_bits_per_byte.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(rows[1].mac_area_um2, None);
        assert_eq!(rows[1].chip_overhead_source, "model");
        assert!(rows[1].mac_structure.contains("lookup"));
        assert!(rows[1].chip_overhead_pct > 0.0);
        // Bigger MAC but lower loss: both are on the frontier.
        assert!(rows[0].pareto && rows[1].pareto);
    }

    #[test]
    fn each_bit_width_has_its_own_frontier() {
        // The 4-bit point dominates both 3-bit ones; the better 3-bit one is still on the
        // 3-bit frontier, the worse one is not.
        let p = [(4, 100.0, 0.01), (3, 120.0, 0.2), (3, 130.0, 0.3)];
        assert_eq!(pareto_front_by_bits(&p), [true, true, false]);
        let flat: Vec<(f64, f64)> = p.iter().map(|q| (q.1, q.2)).collect();
        assert_eq!(pareto_front(&flat), [true, false, false]);
    }

    #[test]
    fn summary_lines_mark_lookup_areas_and_model_overheads() {
        let coef = area::calibrated();
        let int4: Vec<f32> = (-7..=7).map(|v| v as f32).collect();
        let nf4 = tquant_formats::catalog::NF4.to_vec();
        let rows = build_rows(
            &[measured("int4", &int4, 1.8), measured("nf4", &nf4, 1.75)],
            Some(1.7),
            &coef,
        );
        let int4_model = rows[0].mac_area_model_um2;
        assert_eq!(
            rows[0].summary_line(),
            format!("| int4 | 0.01000 | 1.8000 | +0.1000 | 160.7 | {int4_model:.1} | 0.0% |")
        );
        let nf4 = rows[1].summary_line();
        assert!(
            nf4.starts_with("| nf4 | 0.01000 | 1.7500 | +0.0500 | – | "),
            "{nf4}"
        );
        assert!(
            nf4.contains(" (lookup) |") && nf4.ends_with("% (model) |"),
            "{nf4}"
        );
        assert_eq!(SUMMARY_HEADER.lines().count(), 2);
    }

    #[test]
    fn weights_only_rows_use_nmse_as_the_loss() {
        let coef = area::calibrated();
        let mut m = measured("e2m1", &[0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], 0.0);
        m.bits_per_byte = None;
        let rows = build_rows(&[m], None, &coef);
        assert_eq!(rows[0].delta_bits_per_byte, None);
        assert_eq!(rows[0].accuracy_loss, 0.01);
        assert!(rows[0].pareto);
    }

    #[test]
    fn nu_summary_has_the_median() {
        let s = NuSummary::of(vec![3.0, 1000.0, 5.0, 7.0]).unwrap();
        assert_eq!((s.min, s.median, s.max, s.tensors), (3.0, 6.0, 1000.0, 4));
        assert!(NuSummary::of(vec![]).is_none());
    }
}
