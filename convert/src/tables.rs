//! The tables `tquant inspect` and `tquant verify` print: one row per tensor, then the totals.

use crate::inspect::{InspectReport, VerifyReport};
use serde_json::Value;
use std::fmt;

/// nu as a table cell: one number, the range over experts, or `-`.
fn nu_cell(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{:.3}", n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(a) => {
            let xs: Vec<f64> = a.iter().filter_map(|x| x.as_f64()).collect();
            if xs.is_empty() {
                "-".into()
            } else {
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{lo:.2}..{hi:.2}")
            }
        }
        _ => "-".into(),
    }
}

/// A table of every tensor (name, shape, dtype, format, block, scale dtype, bits per weight,
/// nu) and a line of totals.
impl fmt::Display for InspectReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            out,
            "{:<60} {:<18} {:<6} {:<16} {:>6} {:>5} {:>7} {:>12}",
            "name", "shape", "dtype", "format", "block", "scale", "bits/w", "nu"
        )?;
        for t in &self.tensors {
            writeln!(
                out,
                "{:<60} {:<18} {:<6} {:<16} {:>6} {:>5} {:>7.3} {:>12}",
                t.name,
                format!("{:?}", t.shape),
                t.dtype,
                t.format,
                t.block.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                t.scale_dtype.as_deref().unwrap_or("-"),
                t.bits_per_weight,
                nu_cell(&t.nu)
            )?;
        }
        let q8 = match self.q8_0 {
            0 => String::new(),
            n => format!(" ({n} as q8_0)"),
        };
        writeln!(
            out,
            "{} tensors ({} quantized{q8}, {} kept), {:.3} M parameters, {:.2} MB, {:.3} bits per weight",
            self.tensors.len(),
            self.quantized,
            self.kept,
            self.params as f64 / 1e6,
            self.total_bytes as f64 / 1e6,
            self.bits_per_weight
        )
    }
}

/// A table of every quantized tensor's error (NMSE, SQNR, largest error, cosine) and a line of
/// totals with the kept tensors' comparison.
impl fmt::Display for VerifyReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            out,
            "{:<60} {:<16} {:>10} {:>8} {:>11} {:>9}",
            "name", "format", "nmse", "sqnr dB", "max |err|", "cosine"
        )?;
        for t in &self.tensors {
            writeln!(
                out,
                "{:<60} {:<16} {:>10.6} {:>8.2} {:>11.4e} {:>9.6}",
                t.name, t.format, t.nmse, t.sqnr_db, t.max_abs_err, t.cosine
            )?;
        }
        writeln!(
            out,
            "{} quantized tensors, overall nmse {:.6}; {} kept tensors identical, {} different, {} absent",
            self.tensors.len(),
            self.nmse,
            self.kept_identical,
            self.kept_different.len(),
            self.missing.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::nu_cell;
    use serde_json::{json, Value};

    #[test]
    fn nu_cells() {
        assert_eq!(nu_cell(&json!(5.0)), "5.000");
        assert_eq!(nu_cell(&json!([4.0, 6.5, null])), "4.00..6.50");
        assert_eq!(nu_cell(&json!([])), "-");
        assert_eq!(nu_cell(&Value::Null), "-");
    }
}
