//! `tquant convert --format auto[:LIST] --scale-rule search`, `tquant inspect`, `tquant eval` and
//! `tquant report` with the per-tensor choice, end to end on the bundled tiny-lite model.

use crate::support;

use serde_json::Value;
use std::path::Path;
use support::{path, root, stderr_of_failure, stdout_ok, tiny_lite};

fn bits_per_byte(model: &Path) -> f64 {
    let text = root().join("tests/data/model/heldout_head.txt");
    let out = stdout_ok(&[
        "eval",
        path(model),
        "--text",
        path(&text),
        "--window",
        "256",
        "--max-bytes",
        "16448",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["bits_per_byte"].as_f64().unwrap()
}

/// The format column of one line of `tquant inspect`'s table: the word after the dtype, which
/// follows the shape (`[96, 192]`, spaces inside).
fn format_of(line: &str) -> String {
    let after_shape = &line[line.find(']').expect("a shape") + 1..];
    after_shape.split_whitespace().nth(1).unwrap().to_string()
}

fn format_column(inspect: &str, tensor: &str) -> String {
    let line = inspect
        .lines()
        .find(|l| l.starts_with(tensor))
        .unwrap_or_else(|| panic!("no line for {tensor}"));
    format_of(line)
}

#[test]
fn auto_mixes_formats_inspect_shows_them_and_eval_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    // On tiny-lite's weights these two come out closest on different tensors.
    let text = stdout_ok(&[
        "convert",
        path(&tiny_lite()),
        "-o",
        path(&out),
        "--format",
        "auto:apot4_sp,int4_full",
        // Embeddings and lm_head at source precision: every quantized tensor is auto's.
        "--keep-as",
        "source",
    ]);
    assert!(text.contains("auto:apot4_sp,int4_full"), "{text}");
    assert!(text.contains("chosen per matrix: apot4_sp "), "{text}");

    let inspect = stdout_ok(&["inspect", path(&out)]);
    let formats: Vec<String> = inspect
        .lines()
        .filter(|l| l.starts_with("model.layers."))
        .map(format_of)
        .filter(|f| f != "none")
        .collect();
    assert_eq!(formats.len(), 69);
    assert!(formats.iter().any(|f| f == "apot4_sp"), "{inspect}");
    assert!(formats.iter().any(|f| f == "int4_full"), "{inspect}");
    assert!(formats.iter().all(|f| f == "apot4_sp" || f == "int4_full"));

    let json: Value = serde_json::from_str(&stdout_ok(&["inspect", path(&out), "--json"])).unwrap();
    for t in json["tensors"].as_array().unwrap() {
        if t["format"] != "none" {
            assert_eq!(t["scale_rule"], "absmax", "{}", t["name"]);
            assert!(
                t["nu_tensor"].as_f64().is_some(),
                "{}: profile fit",
                t["name"]
            );
            // Same bits per weight whichever format won.
            let bpw = t["bits_per_weight"].as_f64().unwrap();
            assert!(bpw == 4.25 || (bpw - 4.3333).abs() < 1e-3, "{}", t["name"]);
        }
    }

    // A mixed checkpoint runs unchanged; its cost is of the order of one 4-bit format's.
    let f32_bpb = bits_per_byte(&tiny_lite());
    let auto_bpb = bits_per_byte(&out);
    let delta = auto_bpb - f32_bpb;
    assert!(
        delta > 0.005 && delta < 0.1,
        "auto costs {delta} (f32 {f32_bpb})"
    );
}

#[test]
fn default_auto_with_searched_scales_records_both_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let summary = stdout_ok(&[
        "convert",
        path(&tiny_lite()),
        "-o",
        path(&out),
        "--format",
        "auto",
        "--scale-rule",
        "search",
        "--exclude",
        "*.layers.1.*",
        "--exclude",
        "*.layers.2.*",
        "--keep-as",
        "source",
        "--json",
    ]);
    let s: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(s["scale_rule"], "search");
    assert_eq!(
        s["format"],
        "auto:nf4,sf4_search,apot4_sp,e2m1_sp,int4,int4_full"
    );
    let quantized: Vec<&Value> = s["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["action"] == "quantize")
        .collect();
    assert_eq!(quantized.len(), 7, "layer 0: 4 attention + 3 MLP matrices");
    for t in &quantized {
        let f = t["formats"][0].as_str().unwrap();
        assert!(
            ["nf4", "apot4_sp", "e2m1_sp", "int4", "int4_full"].contains(&f)
                || f.starts_with("sf4:nu="),
            "{}: {f}",
            t["name"]
        );
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["scale_rule"], "search");
    assert_eq!(
        config["quantization_config"]["format"],
        "auto:nf4,sf4_search,apot4_sp,e2m1_sp,int4,int4_full"
    );
    let inspect = stdout_ok(&["inspect", path(&out)]);
    let f = format_column(&inspect, "model.layers.0.self_attn.q_proj.weight");
    assert_eq!(
        f,
        quantized
            .iter()
            .find(|t| t["name"] == "model.layers.0.self_attn.q_proj.weight")
            .unwrap()["formats"][0]
    );
}

#[test]
fn bad_auto_and_scale_rule_options_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let input = tiny_lite();
    let cases: [(&[&str], &str); 6] = [
        (&["--scale-rule", "median"], "unknown scale rule"),
        (
            &[
                "--format",
                "nf4",
                "--layout",
                "bnb",
                "--scale-rule",
                "search",
            ],
            "--layout tquant",
        ),
        (
            &["--format", "auto", "--layout", "mxfp4"],
            "--layout tquant",
        ),
        (&["--format", "auto:nf4,nf3"], "same bits"),
        (
            &["--format", "auto:nf4,int4_full", "--scale-dtype", "e8m0"],
            "int4_full",
        ),
        (&["--format", "auto", "--nu", "5"], "'fit' or 'search'"),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["convert", path(&input), "-o", path(&out)];
        args.extend_from_slice(extra);
        let err = stderr_of_failure(&args);
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote an output");
    }
}

#[test]
fn report_measures_auto_and_search_rows_against_fixed_formats() {
    let tmp = tempfile::tempdir().unwrap();
    stdout_ok(&[
        "report",
        path(&tiny_lite()),
        "--weights-only",
        "--formats",
        "apot4_sp,int4_full,auto:apot4_sp/int4_full,apot4_sp+search,auto:apot4_sp/int4_full+search,sf4_search",
        "--block",
        "64",
        "--scale-dtype",
        "f16",
        "-o",
        path(tmp.path()),
    ]);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("report.json")).unwrap())
            .unwrap();
    let rows = json["rows"].as_array().unwrap();
    let row = |f: &str| rows.iter().find(|r| r["format"] == f).unwrap();
    let nmse = |f: &str| row(f)["nmse"].as_f64().unwrap();
    let auto = "auto:apot4_sp/int4_full";
    // Per matrix the smaller error: never worse than either fixed format, overall.
    assert!(nmse(auto) <= nmse("apot4_sp").min(nmse("int4_full")));
    assert!(nmse(&format!("{auto}+search")) <= nmse("apot4_sp+search"));
    assert!(nmse("apot4_sp+search") < nmse("apot4_sp"));
    for r in rows {
        assert_eq!(r["bits_per_weight"], row("apot4_sp")["bits_per_weight"]);
    }
    let chosen = row(auto)["chosen"].as_array().unwrap();
    let matrices: u64 = chosen.iter().map(|c| c["matrices"].as_u64().unwrap()).sum();
    assert_eq!(matrices, 69);
    assert_eq!(chosen.len(), 2, "{chosen:?}");
    // Both chosen formats have published areas: the row takes the larger (APoT4+SP's).
    assert_eq!(row(auto)["mac_area_um2"], 185.1);
    assert_eq!(row(&format!("{auto}+search"))["scale_rule"], "search");
    let nu = &row("sf4_search")["nu"];
    assert_eq!(nu["tensors"], 69);
    assert_eq!(nu["searched"], true);
    let md = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(md.contains("chosen: apot4_sp "), "{md}");
}
