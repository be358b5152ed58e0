//! A few drawing primitives (lines, circles, rectangles, Helvetica text) written out as SVG and
//! as a one-page PDF, so both files show the same drawing. Coordinates are points (1/72 inch)
//! from the top left.

use std::fmt::Write as _;

/// A colour: red, green, blue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// Where a text's anchor point is along it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Anchor {
    /// At its start.
    Start,
    /// In its middle.
    Middle,
    /// At its end.
    End,
}

/// One thing drawn.
#[derive(Debug, Clone)]
pub enum Shape {
    /// A polyline.
    Line {
        /// The points, in order.
        points: Vec<(f64, f64)>,
        /// Stroke colour.
        color: Rgb,
        /// Stroke width.
        width: f64,
        /// Dash and gap lengths; empty for a solid line.
        dash: Vec<f64>,
    },
    /// A circle.
    Circle {
        /// Its centre.
        center: (f64, f64),
        /// Its radius.
        radius: f64,
        /// Fill colour; none for an outline only.
        fill: Option<Rgb>,
        /// Stroke colour.
        stroke: Rgb,
        /// Stroke width.
        width: f64,
    },
    /// An axis-aligned rectangle.
    Rect {
        /// Its top-left corner.
        at: (f64, f64),
        /// Width and height.
        size: (f64, f64),
        /// Fill colour, if filled.
        fill: Option<Rgb>,
        /// Stroke colour, if outlined.
        stroke: Option<Rgb>,
    },
    /// One line of Helvetica; `at` is the anchor on the baseline; `vertical` reads bottom-up.
    Text {
        /// The anchor point.
        at: (f64, f64),
        /// The text (ASCII is measured exactly).
        text: String,
        /// Font size.
        size: f64,
        /// Which point of the text `at` is.
        anchor: Anchor,
        /// Rotated to read bottom-up.
        vertical: bool,
    },
}

/// A page of shapes, drawn in order.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Page width.
    pub width: f64,
    /// Page height.
    pub height: f64,
    /// The shapes, later ones on top.
    pub shapes: Vec<Shape>,
}

/// Helvetica advance widths (1/1000 em) of ASCII 32..=126, from Adobe's Helvetica AFM.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];

/// Width of `text` in Helvetica at `size` points (other characters as wide as a digit).
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars()
        .map(|c| match c as u32 {
            32..=126 => HELVETICA[c as usize - 32],
            _ => 556,
        } as f64)
        .sum::<f64>()
        * size
        / 1000.0
}

/// Where a text's run starts, given its anchor.
fn start_offset(text: &str, size: f64, anchor: Anchor) -> f64 {
    match anchor {
        Anchor::Start => 0.0,
        Anchor::Middle => text_width(text, size) / 2.0,
        Anchor::End => text_width(text, size),
    }
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Canvas {
    /// An empty page of `width` by `height`.
    pub fn new(width: f64, height: f64) -> Canvas {
        Canvas {
            width,
            height,
            shapes: Vec::new(),
        }
    }

    /// The drawing as an SVG document.
    pub fn svg(&self) -> String {
        let mut s = String::new();
        let (w, h) = (self.width, self.height);
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}pt" height="{h}pt" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, 'Liberation Sans', sans-serif">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        for shape in &self.shapes {
            match shape {
                Shape::Line {
                    points,
                    color,
                    width,
                    dash,
                } => {
                    let pts: Vec<String> = points
                        .iter()
                        .map(|(x, y)| format!("{x:.2},{y:.2}"))
                        .collect();
                    let dash = if dash.is_empty() {
                        String::new()
                    } else {
                        let d: Vec<String> = dash.iter().map(|d| d.to_string()).collect();
                        format!(r#" stroke-dasharray="{}""#, d.join(" "))
                    };
                    let _ = writeln!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}" stroke-linejoin="round"{dash}/>"#,
                        pts.join(" "),
                        hex(*color)
                    );
                }
                Shape::Circle {
                    center,
                    radius,
                    fill,
                    stroke,
                    width,
                } => {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="{radius}" fill="{}" stroke="{}" stroke-width="{width}"/>"#,
                        center.0,
                        center.1,
                        fill.map_or("white".into(), hex),
                        hex(*stroke)
                    );
                }
                Shape::Rect {
                    at,
                    size,
                    fill,
                    stroke,
                } => {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{}" stroke="{}" stroke-width="0.6"/>"#,
                        at.0,
                        at.1,
                        size.0,
                        size.1,
                        fill.map_or("none".into(), hex),
                        stroke.map_or("none".into(), hex)
                    );
                }
                Shape::Text {
                    at,
                    text,
                    size,
                    anchor,
                    vertical,
                } => {
                    let anchor = match anchor {
                        Anchor::Start => "start",
                        Anchor::Middle => "middle",
                        Anchor::End => "end",
                    };
                    let rotate = if *vertical {
                        format!(r#" transform="rotate(-90 {:.2} {:.2})""#, at.0, at.1)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.2}" y="{:.2}" font-size="{size}" text-anchor="{anchor}"{rotate}>{}</text>"#,
                        at.0,
                        at.1,
                        xml_escape(text)
                    );
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// A one-page PDF 1.4 of the same drawing, with the standard Helvetica font (nothing
    /// embedded, text stays text).
    pub fn pdf(&self) -> Vec<u8> {
        let h = self.height;
        let mut c = String::new();
        let color = |c: Rgb| {
            format!(
                "{:.3} {:.3} {:.3}",
                c.0 as f64 / 255.0,
                c.1 as f64 / 255.0,
                c.2 as f64 / 255.0
            )
        };
        for shape in &self.shapes {
            match shape {
                Shape::Line {
                    points,
                    color: col,
                    width,
                    dash,
                } => {
                    let d: Vec<String> = dash.iter().map(|d| d.to_string()).collect();
                    let _ = write!(c, "{} RG {width} w 1 j [{}] 0 d ", color(*col), d.join(" "));
                    for (i, (x, y)) in points.iter().enumerate() {
                        let op = if i == 0 { "m" } else { "l" };
                        let _ = write!(c, "{x:.2} {:.2} {op} ", h - y);
                    }
                    c.push_str("S [] 0 d\n");
                }
                Shape::Circle {
                    center,
                    radius,
                    fill,
                    stroke,
                    width,
                } => {
                    let (x, y, r) = (center.0, h - center.1, *radius);
                    let k = 0.552_284_75 * r;
                    let _ = write!(
                        c,
                        "{} rg {} RG {width} w {:.2} {y:.2} m ",
                        color(fill.unwrap_or(Rgb(255, 255, 255))),
                        color(*stroke),
                        x + r
                    );
                    for (a, b, e) in [
                        ((x + r, y + k), (x + k, y + r), (x, y + r)),
                        ((x - k, y + r), (x - r, y + k), (x - r, y)),
                        ((x - r, y - k), (x - k, y - r), (x, y - r)),
                        ((x + k, y - r), (x + r, y - k), (x + r, y)),
                    ] {
                        let _ = write!(
                            c,
                            "{:.2} {:.2} {:.2} {:.2} {:.2} {:.2} c ",
                            a.0, a.1, b.0, b.1, e.0, e.1
                        );
                    }
                    c.push_str("b\n");
                }
                Shape::Rect {
                    at,
                    size,
                    fill,
                    stroke,
                } => {
                    let op = match (fill, stroke) {
                        (Some(_), Some(_)) => "B",
                        (Some(_), None) => "f",
                        (None, _) => "S",
                    };
                    if let Some(f) = fill {
                        let _ = write!(c, "{} rg ", color(*f));
                    }
                    if let Some(s) = stroke {
                        let _ = write!(c, "{} RG 0.6 w ", color(*s));
                    }
                    let _ = writeln!(
                        c,
                        "{:.2} {:.2} {:.2} {:.2} re {op}",
                        at.0,
                        h - at.1 - size.1,
                        size.0,
                        size.1
                    );
                }
                Shape::Text {
                    at,
                    text,
                    size,
                    anchor,
                    vertical,
                } => {
                    let off = start_offset(text, *size, *anchor);
                    let (x, y) = (at.0, h - at.1);
                    let matrix = if *vertical {
                        format!("0 1 -1 0 {x:.2} {:.2}", y - off)
                    } else {
                        format!("1 0 0 1 {:.2} {y:.2}", x - off)
                    };
                    let _ = writeln!(
                        c,
                        "0 0 0 rg BT /F1 {size} Tf {matrix} Tm ({}) Tj ET",
                        pdf_string(text)
                    );
                }
            }
        }
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {} {}] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
                self.width, self.height
            ),
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
                .to_string(),
            format!("<< /Length {} >>\nstream\n{c}endstream", c.len()),
        ];
        let mut out = String::from("%PDF-1.4\n");
        let mut offsets = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            offsets.push(out.len());
            let _ = write!(out, "{} 0 obj\n{o}\nendobj\n", i + 1);
        }
        let xref = out.len();
        let _ = write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
        for o in offsets {
            let _ = writeln!(out, "{o:010} 00000 n ");
        }
        let _ = write!(
            out,
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        );
        out.into_bytes()
    }
}

/// A PDF literal string in WinAnsiEncoding: ASCII as is (with `( ) \` escaped), µ and ² by
/// their codes, anything else as `?`.
fn pdf_string(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '(' | ')' | '\\' => format!("\\{c}"),
            ' '..='~' => c.to_string(),
            'µ' => "\\265".into(),
            '²' => "\\262".into(),
            '×' => "\\327".into(),
            '–' => "\\226".into(),
            '−' => "-".into(),
            _ => "?".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_is_one_page_with_a_valid_xref() {
        let mut c = Canvas::new(100.0, 50.0);
        c.shapes.push(Shape::Text {
            at: (10.0, 20.0),
            text: "area (µm²) (x)".into(),
            size: 9.0,
            anchor: Anchor::Start,
            vertical: false,
        });
        let pdf = c.pdf();
        let text = String::from_utf8(pdf.clone()).unwrap();
        assert!(text.starts_with("%PDF-1.4\n") && text.ends_with("%%EOF\n"));
        assert!(text.contains(r"(area \(\265m\262\) \(x\)) Tj"), "{text}");
        // Each xref offset points at its object.
        let xref = text.find("xref\n").unwrap();
        for (i, line) in text[xref..].lines().skip(3).take(5).enumerate() {
            let off: usize = line[..10].parse().unwrap();
            assert!(
                text[off..].starts_with(&format!("{} 0 obj", i + 1)),
                "{line}"
            );
        }
        let start: usize = text.lines().rev().nth(1).unwrap().parse().unwrap();
        assert_eq!(start, xref);
    }

    #[test]
    fn helvetica_widths() {
        assert_eq!(text_width("nf4", 10.0), (556.0 + 278.0 + 556.0) / 100.0);
    }
}
