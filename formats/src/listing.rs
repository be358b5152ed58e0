//! The catalog as a table (one line per format with its bits, its values in code order and
//! where they come from: what `tquant formats` prints) and as JSON.

use crate::Format;
use std::fmt::Write as _;

/// `formats` as a table: a header, then `name bits [v0, v1, ...] source` per format, the values
/// column as wide as its longest entry.
///
/// ```
/// let table = tquant_formats::catalog_table(&tquant_formats::Format::all());
/// assert!(table.lines().any(|l| l.starts_with("nf4 ") && l.contains("bitsandbytes")));
/// ```
pub fn catalog_table(formats: &[Format]) -> String {
    let values: Vec<String> = formats
        .iter()
        .map(|f| {
            let v: Vec<String> = f
                .codebook()
                .values()
                .iter()
                .map(|v| format!("{v}"))
                .collect();
            format!("[{}]", v.join(", "))
        })
        .collect();
    let width = values.iter().map(|v| v.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<4} {:<width$}  source",
        "name", "bits", "values in code order"
    );
    for (f, v) in formats.iter().zip(&values) {
        let _ = writeln!(
            out,
            "{:<10} {:<4} {v:<width$}  {}",
            f.name(),
            f.bits(),
            f.source()
        );
    }
    out
}

/// `formats` as JSON: an array of `{name, bits, values, source}` (what `tquant formats --json`
/// prints).
///
/// ```
/// let json = tquant_formats::catalog_json(&tquant_formats::Format::all());
/// assert!(json.as_array().unwrap().iter().any(|f| f["name"] == "nf4" && f["bits"] == 4));
/// ```
pub fn catalog_json(formats: &[Format]) -> serde_json::Value {
    let list = formats.iter().map(|f| {
        serde_json::json!({
            "name": f.name(),
            "bits": f.bits(),
            "values": f.codebook().values(),
            "source": f.source(),
        })
    });
    serde_json::Value::Array(list.collect())
}
