//! `tquant convert --format learned` (a table per matrix by k-means on its block-normalised
//! values) and `--format sf4_opt`: the files say what they hold, the reader decodes them, and
//! the learned tables beat the table they start from on the matrices they were learned for.

use crate::support::{path, stderr_of_failure, stdout_ok, tiny_lite};
use serde_json::Value;

fn convert(dir: &std::path::Path, name: &str, extra: &[&str]) -> (std::path::PathBuf, Value) {
    let (model, out) = (tiny_lite(), dir.join(name));
    let mut args = vec!["convert", path(&model), "-o", path(&out), "--json"];
    args.extend_from_slice(extra);
    let summary = serde_json::from_str(&stdout_ok(&args)).unwrap();
    (out, summary)
}

/// `tquant verify --json`'s rows by tensor name: (format, nmse, bits per weight).
fn verify(out: &std::path::Path) -> Vec<(String, String, f64, f64)> {
    let v: Value = serde_json::from_str(&stdout_ok(&[
        "verify",
        path(&tiny_lite()),
        path(out),
        "--json",
    ]))
    .unwrap();
    v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["format"].as_str().unwrap().to_string(),
                t["nmse"].as_f64().unwrap(),
                t["bits_per_weight"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn learned_tables_are_stored_per_matrix_and_beat_their_start() {
    let tmp = tempfile::tempdir().unwrap();
    // The embeddings and head at source precision: every verified tensor is a 4-bit matrix.
    let keep = ["--keep-as", "source"];
    let (learned, summary) = convert(
        tmp.path(),
        "learned",
        &[&["--format", "learned"], &keep[..]].concat(),
    );
    assert_eq!(summary["format"], "learned");
    let (start, _) = convert(
        tmp.path(),
        "sf4_opt",
        &[&["--format", "sf4_opt"], &keep[..]].concat(),
    );
    let (l, s) = (verify(&learned), verify(&start));
    assert_eq!(l.len(), s.len());
    assert!(!l.is_empty());
    let mut tables = std::collections::BTreeSet::new();
    for ((name, format, nmse, bits), (_, start_format, start_nmse, start_bits)) in l.iter().zip(&s)
    {
        assert_eq!(start_format, "sf4_opt", "{name}");
        assert!(format.starts_with("custom:-1,"), "{name}: {format}");
        assert!(format.ends_with(",1"), "{name}: {format}");
        tables.insert(format.clone());
        // Lloyd from sf4_opt's table never increases the block-normalised error; the matrix's
        // error follows it (no rounding or clipping differs).
        assert!(nmse <= start_nmse, "{name}: {nmse} > {start_nmse}");
        // The table's 16 f32 values count.
        assert!(bits > start_bits, "{name}");
    }
    assert!(tables.len() > 1, "every matrix learns its own table");
}

#[test]
fn learned_is_refused_where_it_cannot_be_stored_or_takes_no_nu() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = (tiny_lite(), tmp.path().join("x"));
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "convert",
            path(&model),
            "-o",
            path(&out),
            "--format",
            "learned",
        ];
        a.extend_from_slice(extra);
        a
    };
    let e = stderr_of_failure(&args(&["--layout", "bnb"]));
    assert!(
        e.contains("--format learned needs --layout tquant (bnb stores fixed tables only)"),
        "{e}"
    );
    let e = stderr_of_failure(&args(&["--nu", "3"]));
    assert!(e.contains("not 'learned'"), "{e}");
    assert!(!out.exists());
}
