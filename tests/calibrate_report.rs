//! `tquant report --calibrate`: every format gets a measured GPTQ twin row (`gptq:<format>`,
//! `auto+gptq`), on the bundled tiny-lite model.

use crate::support;

use serde_json::Value;
use support::{path, root, stdout_ok, tiny_lite};

#[test]
fn report_measures_calibrated_rows_beside_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let text = root().join("tests/data/model/heldout_head.txt");
    let text = text.to_str().unwrap();
    let model = tiny_lite();
    let md = stdout_ok(&[
        "report",
        path(&model),
        "--text",
        text,
        "--max-bytes",
        "4112",
        "--formats",
        "nf4,auto:nf4/int4_full",
        // Disjoint from the 4112 bytes scored.
        "--calibrate",
        text,
        "--calibrate-offset",
        "60000",
        "--calibrate-bytes",
        "3000",
        "-o",
        path(dir.path()),
    ]);
    assert!(md.contains("`gptq:` and `+gptq` rows"), "{md}");
    assert!(md.contains("least output error"), "{md}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert!(report["calibration"]
        .as_str()
        .unwrap()
        .contains("3000 tokens"));
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "nf4",
            "gptq:nf4",
            "auto:nf4/int4_full",
            "auto:nf4/int4_full+gptq"
        ]
    );
    let bpb = |i: usize| rows[i]["bits_per_byte"].as_f64().unwrap();
    // Same bits per weight; GPTQ lowers the loss on text it never saw (measured 1.913 -> 1.884).
    assert_eq!(rows[0]["bits_per_weight"], rows[1]["bits_per_weight"]);
    assert!(bpb(1) < bpb(0) - 0.01, "gptq {} vs rtn {}", bpb(1), bpb(0));
    assert!(
        bpb(3) < bpb(2) - 0.01,
        "auto+gptq {} vs auto {}",
        bpb(3),
        bpb(2)
    );
    // GPTQ trades weight error for output error.
    assert!(rows[1]["nmse"].as_f64() > rows[0]["nmse"].as_f64());
}
