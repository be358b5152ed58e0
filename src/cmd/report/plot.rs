//! pareto.svg: every format at (MAC area, accuracy loss), the frontier drawn through the
//! undominated ones, each point labelled. Filled points use Table 10's area, hollow ones the
//! model's estimate.

use super::table::Row;
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 640;

/// The plot as an SVG document. `loss_label` names the y axis, which is logarithmic when every
/// loss is positive and they span more than a factor of 5.
pub fn pareto_svg(rows: &[Row], loss_label: &str) -> Result<String> {
    let pts: Vec<&Row> = rows
        .iter()
        .filter(|r| r.pareto_area_um2.is_finite() && r.accuracy_loss.is_finite())
        .collect();
    let (x0, x1) = range(pts.iter().map(|r| r.pareto_area_um2));
    let (lo, hi) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
            (a.min(r.accuracy_loss), b.max(r.accuracy_loss))
        });
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let drawn = if lo > 0.0 && hi / lo > 5.0 {
            let y = (lo / 1.25..hi * 1.25).log_scale();
            draw(
                &root,
                &pts,
                (x0..x1, y),
                &format!("{loss_label}, log scale"),
            )
        } else {
            let (y0, y1) = range(pts.iter().map(|r| r.accuracy_loss));
            draw(&root, &pts, (x0..x1, y0..y1), loss_label)
        };
        drawn.map_err(|e| anyhow!("drawing pareto.svg: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing pareto.svg: {e}"))?;
    }
    Ok(svg)
}

fn range(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-9);
    (lo - pad, hi + pad)
}

/// Pixel boxes of the labels placed so far, to keep new ones off them.
#[derive(Default)]
struct Labels(Vec<(i32, i32, i32, i32)>);

impl Labels {
    const LINE: i32 = 14;

    /// A spot right of `(px, py)` (or left, near the right edge) that overlaps no placed label:
    /// the first free one of the point's own line and the lines above and below it.
    fn place(&mut self, px: i32, py: i32, text: &str) -> (i32, i32) {
        let w = 7 * text.chars().count() as i32;
        let x = if px + 8 + w < WIDTH as i32 - 8 {
            px + 8
        } else {
            px - 8 - w
        };
        let free = |y: i32, boxes: &[(i32, i32, i32, i32)]| {
            boxes
                .iter()
                .all(|&(a, b, c, d)| x + w <= a || x >= c || y + Self::LINE <= b || y >= d)
        };
        let y = (0..12)
            .map(|k| py - 7 + if k % 2 == 0 { k / 2 } else { -(k + 1) / 2 } * Self::LINE)
            .find(|&y| free(y, &self.0))
            .unwrap_or(py - 7);
        self.0.push((x, y, x + w, y + Self::LINE));
        (x, y)
    }
}

fn draw<DB, X, Y>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    pts: &[&Row],
    (x_spec, y_spec): (X, Y),
    loss_label: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption("Accuracy loss vs. MAC area", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_spec, y_spec)?;
    chart
        .configure_mesh()
        .x_desc("MAC area, µm² (TSMC 28nm; filled: Table 10, hollow: tquant's model)")
        .y_desc(loss_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    let mut front: Vec<&Row> = pts.iter().copied().filter(|r| r.pareto).collect();
    front.sort_by(|a, b| a.pareto_area_um2.total_cmp(&b.pareto_area_um2));
    let front_color = RGBColor(200, 40, 40);
    chart.draw_series(LineSeries::new(
        front.iter().map(|r| (r.pareto_area_um2, r.accuracy_loss)),
        front_color.stroke_width(2),
    ))?;

    let blue = RGBColor(30, 90, 180);
    let mut by_height: Vec<(&Row, (i32, i32))> = pts
        .iter()
        .map(|r| {
            (
                *r,
                chart.backend_coord(&(r.pareto_area_um2, r.accuracy_loss)),
            )
        })
        .collect();
    by_height.sort_by_key(|(_, (x, y))| (*y, *x));
    let mut labels = Labels::default();
    for (r, (px, py)) in by_height {
        let color = if r.pareto { front_color } else { blue };
        let style = if r.mac_area_um2.is_some() {
            color.filled()
        } else {
            color.stroke_width(2)
        };
        root.draw(&Circle::new((px, py), 5, style))?;
        let at = labels.place(px, py, &r.format);
        root.draw(&Text::new(
            r.format.clone(),
            at,
            ("sans-serif", 13).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(format: &str, x: f64, y: f64, pareto: bool, published: bool) -> Row {
        Row {
            format: format.into(),
            bits: 4,
            bits_per_weight: 4.5,
            nmse: 0.01,
            bits_per_byte: None,
            delta_bits_per_byte: None,
            mac_area_um2: published.then_some(x),
            mac_power_uw: None,
            mac_area_model_um2: x,
            mac_area_model_error_pct: None,
            mac_structure: String::new(),
            chip_overhead_pct: 0.0,
            chip_overhead_source: "model",
            pareto_area_um2: x,
            accuracy_loss: y,
            pareto,
            nu: None,
            scale_rule: "absmax",
            chosen: Vec::new(),
        }
    }

    #[test]
    fn svg_has_every_label_and_the_frontier() {
        let rows = [
            row("int4", 160.7, 0.06, true, true),
            row("e3m0", 217.7, 0.2, false, true),
            row("nf4", 447.0, 0.04, true, false),
        ];
        let svg = pareto_svg(&rows, "Δ bits per byte").unwrap();
        assert!(svg.starts_with("<svg"));
        for label in ["int4", "e3m0", "nf4", "Δ bits per byte"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(svg.contains("<polyline"), "no frontier line");
    }
}
