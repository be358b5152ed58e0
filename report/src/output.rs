//! report.json, report.md and report.csv, each written atomically.

use crate::table::Row;
use crate::{ReportError, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use tquant_formats::area::{self, Coefficients, ModelCheck};

/// Everything report.json holds besides the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// The version of report.json's layout (see [`crate::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The model directory.
    pub model: String,
    /// The text bits per byte are measured on.
    pub text: Option<String>,
    /// Tokens scored per chunk.
    pub window: Option<usize>,
    /// Bytes of the text used.
    pub max_bytes: Option<usize>,
    /// Bytes of the text the scored tokens cover.
    pub scored_bytes: Option<usize>,
    /// Block length of every variant.
    pub block: String,
    /// Scale dtype of every variant.
    pub scale_dtype: String,
    /// Only the weight errors were measured.
    pub weights_only: bool,
    /// What `--calibrate` collected (`gptq:` and `+gptq` rows), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// Bits per byte of the unquantized model.
    pub bits_per_byte_f32: Option<f64>,
    /// What `accuracy_loss` and the frontier's y axis are.
    pub accuracy_loss: &'static str,
    /// How `nmse` is computed.
    pub nmse_definition: &'static str,
    /// How `bits_per_weight` is counted.
    pub bits_per_weight_definition: &'static str,
}

#[derive(Debug, Serialize)]
struct AreaModelJson {
    published_source: &'static str,
    chip_overhead_rule: &'static str,
    coefficients_um2: CoefficientsJson,
    worst_fit_error_pct: f64,
    worst_leave_one_out_error_pct: f64,
    table10: Vec<CheckJson>,
    note: &'static str,
}

#[derive(Debug, Serialize)]
struct CoefficientsJson {
    multiplier_constant: f64,
    per_multiplier_array_cell: f64,
    per_aligner_bit: f64,
    accumulator_constant: f64,
    per_accumulator_bit: f64,
}

#[derive(Debug, Serialize)]
struct CheckJson {
    datatype: &'static str,
    acc_bits: u32,
    acc_bits_model: u32,
    mac_um2: f64,
    mac_model_um2: f64,
    error_pct: f64,
    leave_one_out_error_pct: f64,
}

#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    #[serde(flatten)]
    header: &'a Header,
    area_model: AreaModelJson,
    rows: &'a [Row],
}

/// The rule behind `chip_overhead_pct`.
pub const OVERHEAD_RULE: &str = "10% x (MAC / MAC_int4 - 1) + 60% x (bits / 4 - 1)";
const MODEL_NOTE: &str = "MAC = multiplier + accumulator sized from the value set alone \
     (integer grid, product range + sign + log2(256) accumulator bits, cheaper of integer and \
     minifloat multipliers); lookup formats (NF4, SF4, custom) add a decoder to int w bits whose \
     cost no published figure checks";

fn worst(checks: &[ModelCheck], f: impl Fn(&ModelCheck) -> f64) -> f64 {
    checks.iter().map(|c| f(c).abs()).fold(0.0, f64::max)
}

/// report.json as a string.
pub fn json(
    header: &Header,
    rows: &[Row],
    coef: &Coefficients,
    checks: &[ModelCheck],
) -> Result<String> {
    let area_model = AreaModelJson {
        published_source: area::TABLE10_SOURCE,
        chip_overhead_rule: OVERHEAD_RULE,
        coefficients_um2: CoefficientsJson {
            multiplier_constant: coef.mult_const,
            per_multiplier_array_cell: coef.per_array_cell,
            per_aligner_bit: coef.per_aligner_bit,
            accumulator_constant: coef.acc_const,
            per_accumulator_bit: coef.per_acc_bit,
        },
        worst_fit_error_pct: worst(checks, |c| c.error_pct),
        worst_leave_one_out_error_pct: worst(checks, |c| c.loo_error_pct),
        table10: checks
            .iter()
            .map(|c| CheckJson {
                datatype: c.published.paper_name,
                acc_bits: c.published.acc_bits,
                acc_bits_model: c.estimate.shape.acc_bits,
                mac_um2: c.published.mac_um2,
                mac_model_um2: c.estimate.mac_um2,
                error_pct: c.error_pct,
                leave_one_out_error_pct: c.loo_error_pct,
            })
            .collect(),
        note: MODEL_NOTE,
    };
    let mut s = serde_json::to_string_pretty(&ReportJson {
        header,
        area_model,
        rows,
    })?;
    s.push('\n');
    Ok(s)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |x| format!("{x:.digits$}"))
}

/// report.csv: one line per row, empty cells for missing values.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "format,bits,bits_per_weight,nmse,bits_per_byte,delta_bits_per_byte,mac_area_um2,\
         mac_power_uw,mac_area_model_um2,mac_area_model_error_pct,chip_overhead_pct,\
         chip_overhead_source,accuracy_loss,pareto\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.4},{:.6},{},{},{},{},{:.1},{},{:.2},{},{:.6},{}",
            csv_field(&r.format),
            r.bits,
            r.bits_per_weight,
            r.nmse,
            opt(r.bits_per_byte, 6),
            opt(r.delta_bits_per_byte, 6),
            opt(r.mac_area_um2, 1),
            opt(r.mac_power_uw, 1),
            r.mac_area_model_um2,
            opt(r.mac_area_model_error_pct, 1),
            r.chip_overhead_pct,
            r.chip_overhead_source,
            r.accuracy_loss,
            r.pareto
        );
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// report.md: the settings, the table, the frontier and the area model's check against Table 10.
pub fn markdown(header: &Header, rows: &[Row], checks: &[ModelCheck]) -> String {
    let mut s = String::from("# Accuracy vs. MAC area\n\n");
    let _ = writeln!(s, "- model: `{}`", header.model);
    if let (Some(text), Some(w), Some(scored)) = (&header.text, header.window, header.scored_bytes)
    {
        let _ = writeln!(
            s,
            "- text: `{text}`, {scored} bytes scored in windows of {w}; unquantized bits per byte {}",
            opt(header.bits_per_byte_f32, 4)
        );
    } else {
        let _ = writeln!(
            s,
            "- weights only: no evaluation; the loss is the weight nmse"
        );
    }
    let _ = writeln!(
        s,
        "- weight-only RTN with the converter's default policy, block {}, {} scales \
         (absmax rule; `+search` rows: per block the scale with the least squared error)",
        header.block, header.scale_dtype
    );
    if rows
        .iter()
        .any(|r| crate::measure::fp4_preset(&r.format).is_some())
    {
        let _ = writeln!(
            s,
            "- `nvfp4` rows: e2m1, block 16, e4m3 scales under an f32 tensor scale (`+4over6`: \
             per block the scale putting the extreme on 6 or on 4, whichever errs less); \
             `mxfp4` rows: e2m1, block 32, e8m0 scales by the OCP floor rule (`+rceil`: \
             rounded up, nothing clips)"
        );
    }
    if let Some(c) = &header.calibration {
        let _ = writeln!(
            s,
            "- `gptq:` and `+gptq` rows: GPTQ with the inputs' statistics ({c})"
        );
    }
    let _ = writeln!(s, "- nmse: {}", header.nmse_definition);
    let _ = writeln!(s, "- bits/weight: {}", header.bits_per_weight_definition);
    let _ = writeln!(
        s,
        "- MAC area: published = {}; model = tquant's estimate (see below). \
         Chip overhead = {OVERHEAD_RULE}, from the published areas where there are some, else from the model's.\n",
        area::TABLE10_SOURCE
    );
    s.push_str(
        "| format | bits/weight | nmse | bits/byte | Δ bits/byte | MAC µm² (published) | MAC µm² (model) | model error | multiplier (model) | chip overhead | Pareto |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|---:|:-:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.5} | {} | {} | {} | {:.1} | {} | {} | {:.1}% ({}) | {} |",
            r.format,
            r.bits_per_weight,
            r.nmse,
            opt(r.bits_per_byte, 4).if_empty("–"),
            opt(r.delta_bits_per_byte, 4).if_empty("–"),
            opt(r.mac_area_um2, 1).if_empty("–"),
            r.mac_area_model_um2,
            r.mac_area_model_error_pct
                .map_or("–".to_string(), |e| format!("{e:+.1}%")),
            r.mac_structure,
            r.chip_overhead_pct,
            r.chip_overhead_source,
            if r.pareto { "**yes**" } else { "" }
        );
    }
    let mut widths: Vec<u32> = rows.iter().map(|r| r.bits).collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    widths.dedup();
    for bits in widths {
        let mut f: Vec<&Row> = rows.iter().filter(|r| r.pareto && r.bits == bits).collect();
        f.sort_by(|a, b| a.pareto_area_um2.total_cmp(&b.pareto_area_um2));
        let front: Vec<&str> = f.iter().map(|r| r.format.as_str()).collect();
        let _ = writeln!(
            s,
            "\n{bits}-bit Pareto frontier over (MAC area, {}), smallest area first: {}.",
            header.accuracy_loss,
            front.join(" → ")
        );
    }
    s.push('\n');
    for r in rows {
        if let Some(nu) = r.nu {
            let how = if nu.searched {
                "searched per tensor for the least weight error"
            } else {
                "fitted per tensor on block-standardised weights"
            };
            let _ = writeln!(
                s,
                "`{}`: nu {how}, {} tensors, min {:.3}, median {:.3}, max {:.3} (1000 = as good as normal).\n",
                r.format, nu.tensors, nu.min, nu.median, nu.max
            );
        }
    }
    for r in rows.iter().filter(|r| r.format.starts_with("auto")) {
        let chosen: Vec<String> = r
            .chosen
            .iter()
            .map(|c| format!("{} {}", c.format, c.matrices))
            .collect();
        // Calibrated rows compare GPTQ'd candidates by their output error on the calibration.
        let error = if r.format.ends_with("+gptq") {
            "output error tr((W-Q) H (W-Q)^T)"
        } else {
            "weight error"
        };
        let _ = writeln!(
            s,
            "`{}` ({} scales): per matrix the candidate with the least {error}; chosen: {}. \
             MAC area: the largest of the chosen formats'.\n",
            r.format,
            r.scale_rule,
            chosen.join(", ")
        );
    }
    s.push_str(&area_model_markdown(checks));
    s
}

/// The model against Table 10, as a markdown section (also used by the docs).
pub fn area_model_markdown(checks: &[ModelCheck]) -> String {
    let mut s = String::from(
        "## Area model against Table 10\n\n\
         | datatype | acc bits (paper / model) | mult µm² (paper / model) | acc µm² (paper / model) | MAC µm² (paper / model) | error | leave-one-out |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in checks {
        let (p, e) = (c.published, c.estimate);
        let _ = writeln!(
            s,
            "| {} | {} / {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:+.1}% | {:+.1}% |",
            p.paper_name,
            p.acc_bits,
            e.shape.acc_bits,
            p.mult_um2,
            e.mult_um2,
            p.acc_um2,
            e.acc_um2,
            p.mac_um2,
            e.mac_um2,
            c.error_pct,
            c.loo_error_pct
        );
    }
    let _ = writeln!(
        s,
        "\nWorst error {:.1}% (fitted to all ten rows), worst leave-one-out error {:.1}%.",
        worst(checks, |c| c.error_pct),
        worst(checks, |c| c.loo_error_pct)
    );
    s
}

trait IfEmpty {
    fn if_empty(self, dash: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, dash: &str) -> String {
        if self.is_empty() {
            dash.to_string()
        } else {
            self
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, and an
/// fsync of the directory so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| ReportError::NotAFilePath {
        path: path.to_path_buf(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReportError::io(format!("writing {}", path.display()), e));
    }
    tquant_convert::sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_custom_format_names() {
        assert_eq!(csv_field("custom:-1,0,1,2"), "\"custom:-1,0,1,2\"");
        assert_eq!(csv_field("nf4"), "nf4");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
