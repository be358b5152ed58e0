//! The calibration target on tiny-lite, measured through `tquant report` (ignored: about two
//! minutes in release, and it needs the whole held-out corpus, which the repository does not
//! carry: set TQUANT_HELDOUT, default /work/shared/corpus/heldout.txt).
//!
//! Evaluation on the first 65792 bytes (256 windows of 257), calibration on every byte after
//! them. `auto` with calibration (GPTQ, f16 scales) must lose at most half the bits per byte of
//! the best fixed format under plain absmax RTN with f32 scales, at no more bits per weight.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn heldout() -> PathBuf {
    let p = std::env::var("TQUANT_HELDOUT").unwrap_or("/work/shared/corpus/heldout.txt".into());
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "{} is missing: set TQUANT_HELDOUT to the held-out corpus",
        p.display()
    );
    p
}

fn report(out: &Path, extra: &[&str]) -> Vec<Value> {
    let text = heldout();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite");
    let mut args = vec![
        "report",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--window",
        "256",
        "--max-bytes",
        "65792",
        "--block",
        "64",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = Command::new(env!("CARGO_BIN_EXE_tquant"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    v["rows"].as_array().unwrap().clone()
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter().find(|r| r["format"] == name).unwrap()
}

#[test]
#[ignore = "minutes; needs the held-out corpus (TQUANT_HELDOUT)"]
fn auto_with_calibration_halves_the_loss_of_the_best_rtn_format() {
    let dir = tempfile::tempdir().unwrap();
    let fixed = ["nf4", "int4_full", "apot4_sp", "e2m1_sp"];
    let rtn = report(
        &dir.path().join("rtn"),
        &["--scale-dtype", "f32", "--formats", &fixed.join(",")],
    );
    let best = fixed
        .iter()
        .map(|f| row(&rtn, f))
        .min_by(|a, b| {
            let d = |r: &Value| r["delta_bits_per_byte"].as_f64().unwrap();
            d(a).total_cmp(&d(b))
        })
        .unwrap();
    let text = heldout();
    let cal = report(
        &dir.path().join("cal"),
        &[
            "--scale-dtype",
            "f16",
            "--formats",
            "auto",
            "--calibrate",
            text.to_str().unwrap(),
            "--calibrate-offset",
            "65792",
        ],
    );
    let auto = row(&cal, "auto+gptq");
    let (a, b) = (
        auto["delta_bits_per_byte"].as_f64().unwrap(),
        best["delta_bits_per_byte"].as_f64().unwrap(),
    );
    eprintln!("auto+gptq +{a:.4} vs best RTN {} +{b:.4}", best["format"]);
    assert!(
        a <= 0.5 * b,
        "auto+gptq loses {a:.4}, half the best RTN is {:.4}",
        0.5 * b
    );
    assert!(auto["bits_per_weight"].as_f64() <= best["bits_per_weight"].as_f64());
}
