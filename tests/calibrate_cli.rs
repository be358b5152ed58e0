//! `tquant convert --calibrate` on the bundled tiny-lite model: the checkpoint records its
//! calibration, differs from plain rounding, and `tquant eval` runs it.

use crate::support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{available_memory_kb, path, root, stderr_of_failure, stdout_ok, tiny_lite};
use tquant::convert::Checkpoint;

fn text() -> PathBuf {
    root().join("tests/data/model/heldout_head.txt")
}

/// Bits per byte of a checkpoint on the first 4112 bytes (16 windows of 256), which the
/// calibration below never sees.
fn bits_per_byte(model: &Path) -> f64 {
    let out = stdout_ok(&[
        "eval",
        path(model),
        "--text",
        path(&text()),
        "--max-bytes",
        "4112",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["bits_per_byte"].as_f64().unwrap()
}

/// Calibration on 3000 bytes from byte 60000 of the held-out head: disjoint from what
/// `bits_per_byte` scores, and enough tokens for every matrix of tiny-lite (the widest input,
/// the dense down_proj, has 512 columns; an expert sees about 3000 x 2 / 8 tokens).
const CALIBRATE: [&str; 6] = [
    "--calibrate-offset",
    "60000",
    "--calibrate-bytes",
    "3000",
    "--calibrate-window",
    "256",
];

fn convert(out: &Path, extra: &[&str]) -> String {
    let model = tiny_lite();
    let mut args = vec![
        "convert",
        path(&model),
        "-o",
        path(out),
        "--block",
        "64",
        "--scale-dtype",
        "f16",
    ];
    args.extend_from_slice(extra);
    stdout_ok(&args)
}

#[test]
fn calibrated_checkpoint_records_its_calibration_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (gptq, rtn) = (dir.path().join("gptq"), dir.path().join("rtn"));
    let t = text();
    // Embeddings and lm_head at source precision: every quantized tensor is calibrated.
    let mut args = vec![
        "--format",
        "nf4",
        "--keep-as",
        "source",
        "--calibrate",
        path(&t),
    ];
    args.extend_from_slice(&CALIBRATE);
    let printed = convert(&gptq, &args);
    assert!(printed.contains("calibration: 3000 tokens"), "{printed}");
    convert(&rtn, &["--format", "nf4", "--keep-as", "source"]);

    let q = Checkpoint::open(&gptq).unwrap();
    let r = Checkpoint::open(&rtn).unwrap();
    let cfg = &q.config().unwrap()["quantization_config"]["calibration"];
    assert_eq!(cfg["tokens"], 3000);
    assert_eq!(cfg["method"], "gptq");
    assert!(cfg["source"]
        .as_str()
        .unwrap()
        .ends_with("bytes 60000..63000, window 256"));
    assert!(r.config().unwrap()["quantization_config"]["calibration"].is_null());

    let names: Vec<String> = q
        .names()
        .filter(|n| q.quant_info(n).is_some())
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 69, "every decoder matrix, experts included");
    let mut differ = 0;
    for layer in 1..3 {
        let mut routed = 0;
        for j in 0..8 {
            let name = format!("model.layers.{layer}.mlp.experts.{j}.up_proj.weight");
            let rec = q.quant_info(&name).unwrap().calibration.clone().unwrap();
            assert_eq!(rec.calibrated, [true], "{name}");
            routed += rec.tokens[0];
        }
        assert_eq!(routed, 3000 * 2, "layer {layer}: tokens x top-k");
    }
    for name in &names {
        let rec = q.quant_info(name).unwrap().calibration.clone();
        let rec = rec.unwrap_or_else(|| panic!("{name} records no calibration"));
        assert_eq!((rec.method.as_str(), rec.calibrated.len()), ("gptq", 1));
        assert!(rec.calibrated[0], "{name}: {rec:?}");
        if !name.contains(".experts.") {
            assert_eq!(rec.tokens, [3000], "{name}");
        }
        assert!(r.quant_info(name).unwrap().calibration.is_none());
        let (a, b) = (q.get(name).unwrap(), r.get(name).unwrap());
        let (tquant::convert::Weight::Quantized(a), tquant::convert::Weight::Quantized(b)) = (a, b)
        else {
            panic!("{name} is not quantized");
        };
        // Same layout and sizes; GPTQ moves codes.
        assert_eq!(a.codes.len(), b.codes.len());
        assert_eq!(a.scales.len(), b.scales.len());
        differ += usize::from(a.codes != b.codes);
    }
    assert_eq!(
        differ,
        names.len(),
        "every matrix gets other codes than rounding"
    );

    let f32_bpb = bits_per_byte(&tiny_lite());
    let (g, r) = (bits_per_byte(&gptq), bits_per_byte(&rtn));
    eprintln!("f32 {f32_bpb:.4}, rtn {r:.4}, gptq {g:.4}");
    assert!(
        g.is_finite() && g > f32_bpb - 0.01 && g < f32_bpb + 0.1,
        "{g}"
    );
}

#[test]
fn auto_with_calibration_chooses_per_matrix_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auto");
    let t = text();
    let mut args = vec![
        "--format",
        "auto:nf4,int4_full,apot4_sp",
        "--calibrate",
        path(&t),
        "--act-order",
        "--scale-rule",
        "search",
    ];
    args.extend_from_slice(&CALIBRATE);
    let printed = convert(&out, &args);
    assert!(printed.contains("chosen per matrix"), "{printed}");
    let q = Checkpoint::open(&out).unwrap();
    let cfg = &q.config().unwrap()["quantization_config"];
    assert_eq!(cfg["calibration"]["act_order"], true);
    assert_eq!(cfg["scale_rule"], "search");
    let info = q
        .quant_info("model.layers.0.self_attn.o_proj.weight")
        .unwrap();
    assert!(["nf4", "int4_full", "apot4_sp"].contains(&info.matrices[0].format.as_str()));
    assert!(info.calibration.as_ref().unwrap().act_order);
    let bpb = bits_per_byte(&out);
    assert!(bpb.is_finite() && bpb < 2.0, "{bpb}");
}

#[test]
fn experts_below_the_token_threshold_are_not_calibrated() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("few");
    let t = text();
    // 100 tokens: fewer than two per column of every attention and expert input.
    let printed = convert(
        &out,
        &[
            "--format",
            "int4",
            "--calibrate",
            path(&t),
            "--calibrate-offset",
            "60000",
            "--calibrate-bytes",
            "100",
        ],
    );
    assert!(printed.contains("calibration: 100 tokens"), "{printed}");
    let q = Checkpoint::open(&out).unwrap();
    let kv_b = q
        .quant_info("model.layers.0.self_attn.kv_b_proj.weight")
        .unwrap();
    // kv_b_proj reads the 48-wide latent: 100 tokens are enough there (96 needed).
    assert_eq!(kv_b.calibration.as_ref().unwrap().calibrated, [true]);
    let qp = q
        .quant_info("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    let rec = qp.calibration.as_ref().unwrap();
    assert_eq!(
        (rec.calibrated.as_slice(), rec.min_tokens),
        (&[false][..], 384)
    );
    assert!(bits_per_byte(&out).is_finite());
}

#[test]
fn calibration_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let t = text();
    let model = tiny_lite();
    let base = ["convert", path(&model), "-o", path(&out)];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        stderr_of_failure(&a)
    };
    let e = with(&["--calibrate", path(&t), "--calibrate-offset", "999999"]);
    assert!(e.contains("nothing left after --calibrate-offset"), "{e}");
    let e = with(&["--calibrate", path(&t), "--layout", "bnb"]);
    assert!(e.contains("--calibrate needs --layout tquant"), "{e}");
    let e = with(&["--calibrate", "/nonexistent/calibration.txt"]);
    assert!(e.contains("/nonexistent/calibration.txt"), "{e}");
    let e = with(&["--calibrate", path(&t), "--damp=-1"]);
    assert!(e.contains("--damp"), "{e}");
    let e = with(&["--calibrate", path(&t), "--router-weighting", "sideways"]);
    assert!(e.contains("router weighting"), "{e}");
    let e = with(&["--calibrate", path(&t), "--calibrate-window", "0"]);
    assert!(e.contains("--calibrate-window must be at least 1"), "{e}");
    // A quantized checkpoint cannot be the float model calibration runs.
    let q = dir.path().join("q");
    convert(&q, &["--format", "nf4"]);
    let e = stderr_of_failure(&[
        "convert",
        path(&q),
        "-o",
        path(&out),
        "--calibrate",
        path(&t),
    ]);
    assert!(e.contains("already quantized"), "{e}");
    assert!(!out.exists());
}

/// The error of `convert --calibrate` on tiny-lite with a text of `available memory / (hidden
/// bytes * divisor)` bytes, and the output path it must not have created; `None` where the
/// available memory is unknown or the text would be unreasonably large.
fn refusal_for_text_of(divisor: u64) -> Option<(String, tempfile::TempDir)> {
    let available = available_memory_kb()?;
    // tiny-lite's hidden state is 192 f32.
    let tokens = available * 1024 / (192 * 4) / divisor;
    if tokens > 1 << 31 {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("zeros.txt");
    std::fs::File::create(&text)
        .unwrap()
        .set_len(tokens)
        .unwrap();
    let out = dir.path().join("out");
    let e = stderr_of_failure(&[
        "convert",
        path(&tiny_lite()),
        "-o",
        path(&out),
        "--calibrate",
        path(&text),
    ]);
    assert!(!out.exists());
    Some((e, dir))
}

/// Layer-by-layer calibration holds every calibration token's hidden state: a text whose
/// states would not fit in memory is refused up front, with what to do, not run into the
/// out-of-memory killer.
#[test]
fn calibration_text_too_large_for_memory_is_refused_up_front() {
    // Twice what half the available memory would hold.
    let Some((e, _dir)) = refusal_for_text_of(1) else {
        return;
    };
    assert!(
        e.contains("keeps the hidden state of every calibration token"),
        "{e}"
    );
    assert!(e.contains("--calibrate-bytes"), "{e}");
}

/// Through a MoE layer three `tokens x hidden` arrays are held (the hidden state, the
/// feed-forward input, the routed experts' sum), and the check counts all three: a text whose
/// hidden states alone take a quarter of the available memory is refused too.
#[test]
fn calibration_check_counts_a_moe_layers_three_hidden_arrays() {
    // One array is a quarter of the available memory.
    let Some((e, _dir)) = refusal_for_text_of(4) else {
        return;
    };
    assert!(e.contains("x 3 arrays"), "{e}");
    assert!(e.contains("largest stage"), "{e}");
}
