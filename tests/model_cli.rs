//! `tquant logits`, `tquant eval` and `tquant run` end to end on the committed fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/data/model").join(name)
}

fn tquant(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tquant"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logits_prints_one_row_per_token_matching_the_reference() {
    let v2 = fixture("v2");
    let (ok, out, err) = tquant(&["logits", v2.to_str().unwrap(), "--tokens", "3,17,92"]);
    assert!(ok, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = d["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("v2.json")).unwrap()).unwrap();
    for (r, w) in rows.iter().zip(want["logits"].as_array().unwrap()) {
        let (r, w) = (r.as_array().unwrap(), w.as_array().unwrap());
        assert_eq!(r.len(), 128);
        for (a, b) in r.iter().zip(w) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-3);
        }
    }
}

#[test]
fn eval_reports_bits_per_byte_as_json() {
    let text = fixture("heldout_head.txt");
    let tl = root().join("examples/tiny-lite");
    let (ok, out, err) = tquant(&[
        "eval",
        tl.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--window",
        "64",
        "--max-bytes",
        "700",
        "--json",
    ]);
    assert!(ok, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 700 bytes make 10 chunks of 65; each scores 64 bytes.
    assert_eq!(d["tokens"], 640);
    let bpb = d["bits_per_byte"].as_f64().unwrap();
    assert!(bpb > 0.5 && bpb < 4.0, "{bpb}");
    assert!(d["seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn eval_gives_perplexity_for_token_files() {
    let dir = tempfile::TempDir::new().unwrap();
    let ids: Vec<u8> = (0..200u32)
        .flat_map(|i| ((i * 37 + 5) % 128).to_le_bytes())
        .collect();
    let file = dir.path().join("ids.bin");
    std::fs::write(&file, ids).unwrap();
    let v2 = fixture("v2");
    let (ok, out, err) = tquant(&[
        "eval",
        v2.to_str().unwrap(),
        "--tokens-file",
        file.to_str().unwrap(),
        "--window",
        "16",
        "--json",
    ]);
    assert!(ok, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["tokens"], 11 * 16);
    let ppl = d["perplexity"].as_f64().unwrap();
    let bits = d["bits_per_token"].as_f64().unwrap();
    assert!((ppl - bits.exp2()).abs() < 1e-6 * ppl);
    // A byte-vocabulary-only measure is refused for a 128-token model.
    let text = fixture("heldout_head.txt");
    let (ok, _, err) = tquant(&[
        "eval",
        v2.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("256"), "{err}");
}

#[test]
fn run_streams_text_and_reports_speeds() {
    let tl = root().join("examples/tiny-lite");
    let tl = tl.to_str().unwrap();
    let greedy = ["run", tl, "--prompt", "fn main() {", "--max-tokens", "24"];
    let (ok, out, err) = tquant(&greedy);
    assert!(ok, "{err}");
    assert_eq!(out.len(), 24 + 1, "24 bytes and a newline: {out:?}");
    assert!(err.contains("prefill") && err.contains("decode") && err.contains("tokens/s"));
    // Greedy is deterministic; sampling with a seed is too.
    assert_eq!(out, tquant(&greedy).1);
    let sampled = [
        "run",
        tl,
        "--prompt",
        "fn",
        "--max-tokens",
        "24",
        "--temperature",
        "0.9",
        "--seed",
        "5",
    ];
    let (s1, s2) = (tquant(&sampled), tquant(&sampled));
    assert!(s1.0 && s1.1 == s2.1);
}

#[test]
fn missing_model_is_a_clear_error() {
    let (ok, _, err) = tquant(&["logits", "/nonexistent/model", "--tokens", "1"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/model"), "{err}");
}

/// `run` is fast by default (`--exact` opts out, `--fast` is still taken); `eval` and `logits`
/// stay exact unless `--fast`, so their accuracy figures stay comparable.
#[test]
fn run_defaults_to_fast_kernels_and_takes_exact() {
    let help = |cmd: &str| tquant(&[cmd, "--help"]).1;
    let run = help("run");
    assert!(
        run.contains("--exact") && run.contains("--fast") && run.contains("the default of `run`"),
        "{run}"
    );
    for cmd in ["eval", "logits"] {
        assert!(
            help(cmd).contains("the default of `eval` and `logits`"),
            "{cmd}"
        );
    }
    let tl = root().join("examples/tiny-lite");
    let tl = tl.to_str().unwrap();
    let base = ["run", tl, "--prompt-tokens", "102,110", "--max-tokens", "4"];
    for flag in ["--exact", "--fast"] {
        let (ok, out, err) = tquant(&[&base[..], &[flag]].concat());
        assert!(ok && !out.is_empty(), "{flag}: {err}");
    }
    let (ok, _, err) = tquant(&[&base[..], &["--exact", "--fast"]].concat());
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}
