//! `tquant report` end to end on the bundled tiny-lite model: the weights-only path against the
//! committed numpy reference (scripts/fixtures/report_reference.py), a short evaluated run, and
//! bad input.

use crate::support;

use serde_json::Value;
use std::path::Path;
use support::{root, stderr_of_failure, stdout_ok, tiny_lite as model};

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/data/report/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn row<'a>(rows: &'a [Value], format: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["format"] == format)
        .unwrap_or_else(|| panic!("no row {format}"))
}

const FIELDS: [&str; 9] = [
    "format",
    "bits_per_weight",
    "nmse",
    "bits_per_byte",
    "delta_bits_per_byte",
    "mac_area_um2",
    "mac_area_model_um2",
    "chip_overhead_pct",
    "pareto",
];

fn assert_outputs(dir: &Path) -> Value {
    for f in [
        "report.json",
        "report.md",
        "report.csv",
        "pareto.svg",
        "pareto.pdf",
    ] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty");
    }
    let pdf = std::fs::read(dir.join("pareto.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-") && pdf.ends_with(b"%%EOF\n"));
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp")),
        "temporary left: {names:?}"
    );
    let json = read_json(&dir.join("report.json"));
    for r in json["rows"].as_array().unwrap() {
        for f in FIELDS {
            assert!(r.get(f).is_some(), "row {} has no {f}", r["format"]);
        }
    }
    let csv = std::fs::read_to_string(dir.join("report.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        json["rows"].as_array().unwrap().len() + 1
    );
    json
}

/// Same quantizer, two implementations: every format's weight nmse and bits per weight agree with
/// numpy's, sf4_fit included (scipy and tquant fit the same nu to 3 decimals).
#[test]
fn weights_only_matches_the_numpy_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    stdout_ok(&[
        "report",
        model().to_str().unwrap(),
        "--weights-only",
        "--block",
        "64",
        "--scale-dtype",
        "f32",
        "-o",
        out.to_str().unwrap(),
    ]);
    let json = assert_outputs(&out);
    assert_eq!(json["weights_only"], true);
    assert_eq!(json["accuracy_loss"], "nmse");
    let rows = json["rows"].as_array().unwrap();
    let reference = reference();
    let ref_rows = reference["rows"].as_array().unwrap();
    // `all` also has the per-tensor choices, which the reference does not model.
    let per_tensor = ["sf4_search", "auto", "auto+search"];
    assert_eq!(
        rows.len(),
        ref_rows.len() + per_tensor.len(),
        "the reference's formats and the per-tensor choices"
    );
    for name in per_tensor {
        assert_eq!(
            row(rows, name)["bits_per_weight"],
            row(rows, "nf4")["bits_per_weight"]
        );
    }
    for r in ref_rows {
        let name = r["format"].as_str().unwrap();
        let ours = row(rows, name);
        let (a, b) = (ours["nmse"].as_f64().unwrap(), r["nmse"].as_f64().unwrap());
        let tol = if name == "sf4_fit" { 1e-5 } else { 1e-6 };
        assert!(((a - b) / b).abs() < tol, "{name}: nmse {a} vs numpy {b}");
        assert_eq!(ours["bits_per_weight"], r["bits_per_weight"], "{name}");
        assert!(ours["bits_per_byte"].is_null() && ours["delta_bits_per_byte"].is_null());
    }
    // Table 10 verbatim where the paper has a figure; the model everywhere.
    assert_eq!(row(rows, "int4")["mac_area_um2"], 160.7);
    assert_eq!(row(rows, "e2m1_sp")["mac_area_um2"], 218.0);
    assert_eq!(
        row(rows, "e2m1_sp")["chip_overhead_pct"]
            .as_f64()
            .unwrap()
            .round(),
        4.0
    );
    assert!(row(rows, "nf4")["mac_area_um2"].is_null());
    assert!(row(rows, "nf4")["mac_area_model_um2"].as_f64().unwrap() > 160.7);
    // int4_full has int4's published area and a lower nmse: int4 cannot be on the frontier.
    assert_eq!(row(rows, "int4")["pareto"], false);
    assert_eq!(row(rows, "int4_full")["pareto"], true);
    let svg = std::fs::read_to_string(out.join("pareto.svg")).unwrap();
    assert!(svg.contains("e3m0") && svg.contains("<polyline"));
}

#[test]
fn short_evaluated_report_has_every_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    let text = root().join("tests/data/report/text-sample.txt");
    stdout_ok(&[
        "report",
        model().to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--window",
        "64",
        "--max-bytes",
        "650",
        "--formats",
        "nf4,e3m0",
        "--block",
        "64",
        "--scale-dtype",
        "f32",
        "-o",
        out.to_str().unwrap(),
    ]);
    let json = assert_outputs(&out);
    assert_eq!(json["scored_bytes"], 640);
    let base = json["bits_per_byte_f32"].as_f64().unwrap();
    assert!(base > 0.5 && base < 8.0, "bits per byte {base}");
    let rows = json["rows"].as_array().unwrap();
    for r in rows {
        let bpb = r["bits_per_byte"].as_f64().unwrap();
        let delta = r["delta_bits_per_byte"].as_f64().unwrap();
        assert!((bpb - base - delta).abs() < 1e-9);
    }
    // e3m0 costs clearly more than nf4 even on a short text.
    let d = |f: &str| row(rows, f)["delta_bits_per_byte"].as_f64().unwrap();
    assert!(
        d("e3m0") > d("nf4"),
        "e3m0 {} vs nf4 {}",
        d("e3m0"),
        d("nf4")
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| nf4 |") && md.contains("Worst error"));
}

#[test]
fn bad_input_fails_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    let o = out.to_str().unwrap();
    let missing = dir.path().join("no-such-model");
    let e = stderr_of_failure(&[
        "report",
        missing.to_str().unwrap(),
        "--weights-only",
        "-o",
        o,
    ]);
    assert!(e.contains("no-such-model"));

    let m = model();
    let e = stderr_of_failure(&[
        "report",
        m.to_str().unwrap(),
        "--weights-only",
        "--formats",
        "nf5",
        "-o",
        o,
    ]);
    assert!(e.contains("nf5"));

    // --text is required without --weights-only, and the message says so.
    let e = stderr_of_failure(&["report", m.to_str().unwrap(), "-o", o]);
    assert!(e.contains("--text") && e.contains("--weights-only"), "{e}");
    assert!(!out.exists(), "nothing written on failure");
}

/// An existing report is replaced only with --force, and never a file the user put there.
#[test]
fn existing_output_is_replaced_only_when_it_is_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    let o = out.to_str().unwrap();
    let m = model();
    let args = |force: bool| {
        let mut a = vec![
            "report",
            m.to_str().unwrap(),
            "--weights-only",
            "--formats",
            "nf4",
            "-o",
            o,
        ];
        if force {
            a.push("--force");
        }
        a
    };
    stdout_ok(&args(false));
    assert_outputs(&out);
    let e = stderr_of_failure(&args(false));
    assert!(e.contains("output exists; pass --force"), "{e}");
    std::fs::write(out.join("report.md"), "stale").unwrap();
    stdout_ok(&args(true));
    assert_ne!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        "stale"
    );

    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = stderr_of_failure(&args(true));
    assert!(
        e.contains("notes.txt") && e.contains("not written by tquant"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(out.join("report.json").exists());
}

#[test]
fn fp4_rows_have_their_own_bits_per_weight_and_the_e2m1_mac() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    stdout_ok(&[
        "report",
        model().to_str().unwrap(),
        "--formats",
        "nvfp4,nvfp4+4over6,mxfp4,mxfp4+rceil",
        "--weights-only",
        "-o",
        out.to_str().unwrap(),
    ]);
    let json = read_json(&out.join("report.json"));
    let rows = json["rows"].as_array().unwrap();
    let f = |name: &str, field: &str| row(rows, name)[field].as_f64().unwrap();
    for nv in ["nvfp4", "nvfp4+4over6"] {
        // 4 + 8/16, plus a 4-byte tensor scale per matrix.
        let b = f(nv, "bits_per_weight");
        assert!(b > 4.5 && b < 4.502, "{nv} {b}");
    }
    for mx in ["mxfp4", "mxfp4+rceil"] {
        // 4 + 8/32, plus the short blocks at row ends.
        let b = f(mx, "bits_per_weight");
        assert!((4.25..4.26).contains(&b), "{mx} {b}");
    }
    // Four over six never errs more than the standard scale, block by block.
    assert!(f("nvfp4+4over6", "nmse") < f("nvfp4", "nmse"));
    assert!(f("mxfp4+rceil", "nmse") != f("mxfp4", "nmse"));
    for r in rows {
        assert_eq!(r["mac_area_um2"].as_f64(), Some(170.4), "{r}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("`nvfp4` rows: e2m1, block 16, e4m3"), "{md}");
}
