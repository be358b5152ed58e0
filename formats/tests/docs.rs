//! docs/formats.md lists every catalog format with its values in code order: this keeps the
//! table equal to the catalog (run with --nocapture to print the rows on a mismatch).

use tquant_formats::Format;

/// One markdown row: name, bits, values in code order (f32 shortest round-trip decimals).
pub fn row(f: &Format) -> String {
    let values: Vec<String> = f
        .codebook()
        .values()
        .iter()
        .map(|v| format!("{v}"))
        .collect();
    format!("| `{}` | {} | {} |", f.name(), f.bits(), values.join(", "))
}

#[test]
fn docs_table_lists_every_format_with_its_values() {
    let doc = include_str!("../../docs/formats.md");
    let mut missing = Vec::new();
    for f in Format::all() {
        let r = row(&f);
        if !doc.lines().any(|l| l.starts_with(&r)) {
            missing.push(r);
        }
    }
    if !missing.is_empty() {
        eprintln!("rows to put in docs/formats.md:\n{}", missing.join("\n"));
    }
    assert!(
        missing.is_empty(),
        "{} formats missing or out of date",
        missing.len()
    );
}
