//! pareto.svg and pareto.pdf: every format at (MAC area, accuracy loss), one Pareto frontier per
//! bit width through its undominated formats, each point labelled where the label overlaps
//! nothing (else numbered, with the names in a key), and a legend. Filled points use Table 10's
//! area, hollow ones tquant's area model.

use crate::canvas::{text_width, Anchor, Canvas, Rgb, Shape};
use crate::table::Row;

const WIDTH: f64 = 540.0;
const HEIGHT: f64 = 340.0;
/// The plot area: left, top, right, bottom (points); the legend is right of it.
const AREA: (f64, f64, f64, f64) = (62.0, 12.0, 372.0, 298.0);
const TICK_FONT: f64 = 8.0;
const TITLE_FONT: f64 = 9.0;
const LABEL_FONT: f64 = 7.5;
const RADIUS: f64 = 3.0;
/// The frontier ring's radius: labels keep clear of it.
const RING: f64 = RADIUS + 2.0;
const GRID: Rgb = Rgb(222, 222, 222);
const MINOR_GRID: Rgb = Rgb(242, 242, 242);
const FRAME: Rgb = Rgb(120, 120, 120);

/// One colour (and dash) per bit width, readable in grey print.
fn style(bits: u32) -> (Rgb, Vec<f64>) {
    match bits {
        4 => (Rgb(31, 95, 180), Vec::new()),
        3 => (Rgb(214, 96, 12), vec![4.0, 2.0]),
        _ => (Rgb(60, 140, 60), vec![1.5, 1.5]),
    }
}

/// A label's box on the page: left, top, right, bottom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Box4(pub f64, pub f64, pub f64, pub f64);

impl Box4 {
    fn overlaps(&self, o: &Box4) -> bool {
        self.0 < o.2 && o.0 < self.2 && self.1 < o.3 && o.1 < self.3
    }
    fn inside(&self, b: &Box4) -> bool {
        self.0 >= b.0 && self.2 <= b.2 && self.1 >= b.1 && self.3 <= b.3
    }
}

/// The drawing, and the layout facts its tests check.
#[derive(Debug)]
pub struct Plot {
    /// The drawing.
    pub canvas: Canvas,
    /// Every label placed in the plot area (names and key numbers).
    pub label_boxes: Vec<Box4>,
    /// The bit width of each frontier drawn, in drawing order.
    pub frontiers: Vec<u32>,
    /// The tick labels of the x and y axes.
    pub ticks: (Vec<String>, Vec<String>),
}

/// A linear or logarithmic axis from data to page coordinates.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    /// Page coordinates of `lo` and `hi`.
    from: f64,
    to: f64,
}

impl Axis {
    fn map(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.from + t * (self.to - self.from)
    }
}

/// Ticks at 1, 2 and 5 times powers of ten between `lo` and `hi` (also 3 below two decades,
/// 1..9 within one, only 1s past four), each printed with exactly the digits it has.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let decades = (hi / lo).log10();
    let mantissas: &[u32] = if decades > 4.0 {
        &[1]
    } else if decades >= 2.0 {
        &[1, 2, 5]
    } else if decades >= 1.0 {
        &[1, 2, 3, 5]
    } else {
        &[1, 2, 3, 4, 5, 6, 7, 8, 9]
    };
    let mut ticks = Vec::new();
    for e in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for &m in mantissas {
            let v = m as f64 * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                ticks.push((v, decimal(m as i64, e)));
            }
        }
    }
    ticks
}

/// `m x 10^e` written out without float noise: `0.002`, `50`, or `1e-6` when long.
fn decimal(m: i64, e: i32) -> String {
    if !(-4..=5).contains(&e) {
        return format!("{m}e{e}");
    }
    if e >= 0 {
        return (m * 10i64.pow(e as u32)).to_string();
    }
    let digits = (-e) as usize;
    let all = format!("{:0>width$}", m.abs(), width = digits + 1);
    let (int, frac) = all.split_at(all.len() - digits);
    let frac = frac.trim_end_matches('0');
    let sign = if m < 0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// About `n` ticks at multiples of 1, 2 or 5 times a power of ten, printed with the step's digits.
pub fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<(f64, String)> {
    let raw = (hi - lo) / n.max(1) as f64;
    let e = raw.log10().floor() as i32;
    let m = [1, 2, 5, 10]
        .into_iter()
        .min_by(|&a, &b| {
            let off = |m: i32| (m as f64 * 10f64.powi(e) / raw).ln().abs();
            off(a).total_cmp(&off(b))
        })
        .expect("four candidates");
    let (m, e) = if m == 10 { (1, e + 1) } else { (m, e) };
    let step = m as f64 * 10f64.powi(e);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| (k as f64 * step, decimal(k * m as i64, e)))
        .collect()
}

/// Every integer multiple (1..9) of a power of ten between `lo` and `hi`.
fn minor_ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let mut ticks = Vec::new();
    for e in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for m in 1..=9 {
            let v = m as f64 * 10f64.powi(e);
            if v >= lo && v <= hi {
                ticks.push((v, String::new()));
            }
        }
    }
    ticks
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let pad = ((hi - lo) * 0.08)
        .max(hi.abs().max(lo.abs()) * 0.02)
        .max(1e-9);
    (lo - pad, hi + pad)
}

/// The plot of `rows` (those with a finite area and loss). `loss_label` titles the y axis, which
/// is logarithmic when every loss is positive and they span more than a factor of 5.
pub fn pareto_plot(rows: &[Row], loss_label: &str) -> Plot {
    let pts: Vec<&Row> = rows
        .iter()
        .filter(|r| r.pareto_area_um2.is_finite() && r.accuracy_loss.is_finite())
        .collect();
    let (l, t, r, b) = AREA;
    let fold = |f: fn(&Row) -> f64| {
        pts.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), row| {
                (a.min(f(row)), z.max(f(row)))
            })
    };
    let (x_lo, x_hi) = match fold(|r| r.pareto_area_um2) {
        (a, z) if a.is_finite() => padded(a, z),
        _ => (0.0, 1.0),
    };
    let (y_lo, y_hi) = fold(|r| r.accuracy_loss);
    let log = y_lo > 0.0 && y_hi / y_lo > 5.0;
    let (y_lo, y_hi) = match (log, y_lo.is_finite()) {
        (true, _) => (y_lo / 1.4, y_hi * 1.4),
        (false, true) => padded(y_lo, y_hi),
        (false, false) => (0.0, 1.0),
    };
    let x = Axis {
        lo: x_lo,
        hi: x_hi,
        log: false,
        from: l,
        to: r,
    };
    let y = Axis {
        lo: y_lo,
        hi: y_hi,
        log,
        from: b,
        to: t,
    };
    let mut c = Canvas::new(WIDTH, HEIGHT);
    let x_ticks = linear_ticks(x_lo, x_hi, 6);
    let y_ticks = if log {
        log_ticks(y_lo, y_hi)
    } else {
        linear_ticks(y_lo, y_hi, 6)
    };
    for (v, s) in &x_ticks {
        let px = x.map(*v);
        line(&mut c, vec![(px, t), (px, b)], GRID, 0.5);
        line(&mut c, vec![(px, b), (px, b + 3.0)], FRAME, 0.6);
        text(&mut c, (px, b + 12.0), s, TICK_FONT, Anchor::Middle);
    }
    if log && (y_hi / y_lo).log10() <= 4.0 {
        // Unlabelled grid at every integer multiple of a power of ten, to read values between.
        for (v, _) in minor_ticks(y_lo, y_hi) {
            let py = y.map(v);
            line(&mut c, vec![(l, py), (r, py)], MINOR_GRID, 0.4);
        }
    }
    for (v, s) in &y_ticks {
        let py = y.map(*v);
        line(&mut c, vec![(l, py), (r, py)], GRID, 0.5);
        line(&mut c, vec![(l - 3.0, py), (l, py)], FRAME, 0.6);
        text(&mut c, (l - 5.0, py + 2.8), s, TICK_FONT, Anchor::End);
    }
    c.shapes.push(Shape::Rect {
        at: (l, t),
        size: (r - l, b - t),
        fill: None,
        stroke: Some(FRAME),
    });
    text(
        &mut c,
        ((l + r) / 2.0, HEIGHT - 10.0),
        "MAC area (µm², 28 nm)",
        TITLE_FONT,
        Anchor::Middle,
    );
    let y_title = if log {
        format!("{loss_label}, log scale")
    } else {
        loss_label.to_string()
    };
    c.shapes.push(Shape::Text {
        at: (14.0, (t + b) / 2.0),
        text: y_title,
        size: TITLE_FONT,
        anchor: Anchor::Middle,
        vertical: true,
    });

    // One frontier per bit width: a 3-bit format is compared with 3-bit formats only.
    let mut widths: Vec<u32> = pts.iter().map(|r| r.bits).collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    widths.dedup();
    let mut frontiers = Vec::new();
    for &bits in &widths {
        let mut front: Vec<&Row> = pts
            .iter()
            .copied()
            .filter(|r| r.bits == bits && r.pareto)
            .collect();
        front.sort_by(|a, b| a.pareto_area_um2.total_cmp(&b.pareto_area_um2));
        if front.is_empty() {
            continue;
        }
        let (color, dash) = style(bits);
        c.shapes.push(Shape::Line {
            points: front
                .iter()
                .map(|r| (x.map(r.pareto_area_um2), y.map(r.accuracy_loss)))
                .collect(),
            color,
            width: 1.3,
            dash,
        });
        frontiers.push(bits);
    }
    let at: Vec<(f64, f64)> = pts
        .iter()
        .map(|r| (x.map(r.pareto_area_um2), y.map(r.accuracy_loss)))
        .collect();
    for (row, &p) in pts.iter().zip(&at) {
        if row.pareto {
            ring(&mut c, p);
        }
        marker(&mut c, p, row.bits, row.mac_area_um2.is_some());
    }

    // Labels: frontier points first, then top to bottom; a label that fits nowhere free
    // becomes a number, named in the key under the legend.
    let markers: Vec<Box4> = at
        .iter()
        .map(|&(px, py)| Box4(px - RING, py - RING, px + RING, py + RING))
        .collect();
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by(|&i, &j| {
        (!pts[i].pareto, at[i].1, at[i].0)
            .partial_cmp(&(!pts[j].pareto, at[j].1, at[j].0))
            .unwrap()
    });
    let mut placed: Vec<Box4> = Vec::new();
    let mut key: Vec<(usize, String)> = Vec::new();
    for i in order {
        let name = &pts[i].format;
        let spot = place(at[i], name, &placed, &markers).map(|s| (s, name.clone()));
        let (spot, shown) = match spot {
            Some(s) => s,
            None => {
                let n = (key.len() + 1).to_string();
                let s = place(at[i], &n, &placed, &markers)
                    .or_else(|| place_far(at[i], &n, &placed, &markers))
                    .expect("a number fits somewhere in the plot");
                key.push((key.len() + 1, name.clone()));
                (s, n)
            }
        };
        let (bx, leader) = spot;
        if let Some(end) = leader {
            line(&mut c, vec![at[i], end], Rgb(150, 150, 150), 0.4);
        }
        // Left-hand labels end at the box's right edge, next to their point.
        let (x_text, anchor) = if bx.2 <= at[i].0 {
            (bx.2, Anchor::End)
        } else {
            (bx.0, Anchor::Start)
        };
        text(
            &mut c,
            (x_text, bx.3 - 0.3 * LABEL_FONT),
            &shown,
            LABEL_FONT,
            anchor,
        );
        placed.push(bx);
    }
    legend(&mut c, &widths, &key);
    Plot {
        canvas: c,
        label_boxes: placed,
        frontiers,
        ticks: (
            x_ticks.into_iter().map(|t| t.1).collect(),
            y_ticks.into_iter().map(|t| t.1).collect(),
        ),
    }
}

/// The first free spot for `label` near the point `p`: beside it on its own line, then one
/// line up or down, and so on (with a leader line once it has moved off the point).
fn place(
    p: (f64, f64),
    label: &str,
    placed: &[Box4],
    markers: &[Box4],
) -> Option<(Box4, Option<(f64, f64)>)> {
    search(p, label, placed, markers, 6)
}

/// Like [`place`], but as far from the point as the plot allows.
fn place_far(
    p: (f64, f64),
    label: &str,
    placed: &[Box4],
    markers: &[Box4],
) -> Option<(Box4, Option<(f64, f64)>)> {
    search(p, label, placed, markers, 60)
}

fn search(
    (px, py): (f64, f64),
    label: &str,
    placed: &[Box4],
    markers: &[Box4],
    max_lines: i32,
) -> Option<(Box4, Option<(f64, f64)>)> {
    let (l, t, r, b) = AREA;
    let inner = Box4(l + 1.0, t + 1.0, r - 1.0, b - 1.0);
    // Room for fonts wider than Helvetica (a viewer without it substitutes one).
    let w = text_width(label, LABEL_FONT) * 1.12 + 1.0;
    let h = LABEL_FONT + 1.0;
    let step = h + 0.5;
    for k in 0..=2 * max_lines {
        let dy = if k % 2 == 0 { k / 2 } else { -(k + 1) / 2 } as f64 * step;
        for right in [true, false] {
            let x0 = if right {
                px + RING + 2.0
            } else {
                px - RING - 2.0 - w
            };
            let top = py - h / 2.0 + dy;
            let bx = Box4(x0, top, x0 + w, top + h);
            let free = bx.inside(&inner)
                && !placed.iter().any(|o| o.overlaps(&bx))
                && !markers.iter().any(|m| m.overlaps(&bx));
            if free {
                let leader =
                    (dy.abs() > 0.5 * h).then(|| (if right { bx.0 } else { bx.2 }, top + h / 2.0));
                return Some((bx, leader));
            }
        }
    }
    None
}

fn line(c: &mut Canvas, points: Vec<(f64, f64)>, color: Rgb, width: f64) {
    c.shapes.push(Shape::Line {
        points,
        color,
        width,
        dash: Vec::new(),
    });
}

fn text(c: &mut Canvas, at: (f64, f64), s: &str, size: f64, anchor: Anchor) {
    c.shapes.push(Shape::Text {
        at,
        text: s.to_string(),
        size,
        anchor,
        vertical: false,
    });
}

fn marker(c: &mut Canvas, center: (f64, f64), bits: u32, published: bool) {
    let (color, _) = style(bits);
    c.shapes.push(Shape::Circle {
        center,
        radius: RADIUS,
        fill: published.then_some(color),
        stroke: color,
        width: 1.1,
    });
}

/// The ring around a point on its bit width's frontier.
fn ring(c: &mut Canvas, center: (f64, f64)) {
    c.shapes.push(Shape::Circle {
        center,
        radius: RING,
        fill: None,
        stroke: Rgb(40, 40, 40),
        width: 0.8,
    });
}

/// Right of the plot: each bit width's colour and frontier, what filled and hollow mean, and
/// the names of numbered points.
fn legend(c: &mut Canvas, widths: &[u32], key: &[(usize, String)]) {
    let x0 = AREA.2 + 12.0;
    let mut y = AREA.1 + 8.0;
    let row = 12.0;
    for &bits in widths {
        let (color, dash) = style(bits);
        c.shapes.push(Shape::Line {
            points: vec![(x0, y), (x0 + 22.0, y)],
            color,
            width: 1.3,
            dash,
        });
        marker(c, (x0 + 11.0, y), bits, true);
        text(
            c,
            (x0 + 28.0, y + 2.8),
            &format!("{bits}-bit formats, Pareto frontier"),
            LABEL_FONT,
            Anchor::Start,
        );
        y += row;
    }
    ring(c, (x0 + 11.0, y));
    marker(
        c,
        (x0 + 11.0, y),
        widths.first().copied().unwrap_or(4),
        false,
    );
    text(
        c,
        (x0 + 28.0, y + 2.8),
        "on its frontier",
        LABEL_FONT,
        Anchor::Start,
    );
    y += row;
    for (published, what) in [
        (true, "area: Table 10 (published)"),
        (false, "area: tquant's model"),
    ] {
        c.shapes.push(Shape::Circle {
            center: (x0 + 11.0, y),
            radius: RADIUS,
            fill: published.then_some(Rgb(90, 90, 90)),
            stroke: Rgb(90, 90, 90),
            width: 1.1,
        });
        text(c, (x0 + 28.0, y + 2.8), what, LABEL_FONT, Anchor::Start);
        y += row;
    }
    if key.is_empty() {
        return;
    }
    y += 4.0;
    text(
        c,
        (x0, y + 2.8),
        "numbered points:",
        LABEL_FONT,
        Anchor::Start,
    );
    y += row;
    for (n, name) in key {
        if y > HEIGHT - 6.0 {
            break;
        }
        text(
            c,
            (x0 + 4.0, y + 2.8),
            &format!("{n}  {name}"),
            LABEL_FONT,
            Anchor::Start,
        );
        y += row - 2.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(format: &str, bits: u32, x: f64, y: f64, pareto: bool, published: bool) -> Row {
        Row {
            format: format.into(),
            bits,
            bits_per_weight: bits as f64 + 0.5,
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

    /// Many formats crowded on one area, as the lookup formats are, plus 3-bit ones far above.
    fn crowded() -> Vec<Row> {
        let mut rows = vec![
            row("int4", 4, 160.7, 0.06, false, true),
            row("int4_full", 4, 160.7, 0.045, true, true),
            row("e2m1", 4, 202.0, 0.05, false, true),
            row("e2m1_sp", 4, 218.0, 0.041, true, true),
            row("e3m0", 4, 217.7, 0.2, false, true),
            row("apot4_sp", 4, 250.0, 0.039, true, false),
            row("int3", 3, 120.0, 0.3, true, false),
            row("nf3", 3, 150.0, 0.25, true, false),
            row("sf3", 3, 150.0, 0.26, false, false),
        ];
        for (i, name) in [
            "nf4",
            "sf4",
            "sf4_fit",
            "sf4_search",
            "auto",
            "auto+search",
            "nf4+search",
            "sf4:nu=3.5",
        ]
        .iter()
        .enumerate()
        {
            rows.push(row(
                name,
                4,
                447.0,
                0.035 + 0.0004 * i as f64,
                i == 0,
                false,
            ));
        }
        rows
    }

    #[test]
    fn ticks_are_written_without_float_noise() {
        let lin: Vec<String> = linear_ticks(0.0, 0.32, 6)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(lin, ["0", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3"]);
        let log: Vec<String> = log_ticks(0.0015, 0.4).into_iter().map(|t| t.1).collect();
        assert_eq!(
            log,
            ["0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2"]
        );
        let area: Vec<String> = linear_ticks(110.0, 460.0, 6)
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(area, ["150", "200", "250", "300", "350", "400", "450"]);
        assert_eq!(decimal(-15, -2), "-0.15");
        assert_eq!(decimal(10, -2), "0.1");
        assert_eq!(decimal(0, -3), "0");
        assert_eq!(decimal(2, -7), "2e-7");
        let plot = pareto_plot(&crowded(), "weight NMSE");
        for t in plot.ticks.0.iter().chain(&plot.ticks.1) {
            assert!(t.len() <= 6, "tick {t}");
        }
        // Every 4-bit point lies below 0.1: the log axis has ticks down there.
        assert!(
            plot.ticks.1.iter().any(|t| t == "0.05"),
            "{:?}",
            plot.ticks.1
        );
    }

    #[test]
    fn labels_never_overlap_and_stay_inside() {
        let plot = pareto_plot(&crowded(), "weight NMSE");
        let b = &plot.label_boxes;
        assert_eq!(b.len(), crowded().len());
        for (i, a) in b.iter().enumerate() {
            for c in &b[i + 1..] {
                assert!(!a.overlaps(c), "{a:?} overlaps {c:?}");
            }
            assert!(a.0 >= AREA.0 && a.2 <= AREA.2 && a.1 >= AREA.1 && a.3 <= AREA.3);
        }
    }

    #[test]
    fn one_frontier_per_bit_width_and_a_legend() {
        let plot = pareto_plot(&crowded(), "weight NMSE");
        assert_eq!(plot.frontiers, [4, 3]);
        let svg = plot.canvas.svg();
        assert!(svg.starts_with("<svg"));
        for s in [
            "4-bit formats, Pareto frontier",
            "3-bit formats, Pareto frontier",
            "area: Table 10",
            "area: tquant",
            "MAC area (µm²",
            "weight NMSE, log scale",
        ] {
            assert!(svg.contains(s), "{s} missing");
        }
        assert!(plot.canvas.pdf().starts_with(b"%PDF"));
    }
}
