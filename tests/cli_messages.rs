//! What a new user meets on the command line: messages that say what is wrong and what to do,
//! options that mean the same in every subcommand, and output that survives a closed pipe.

use crate::support;

use serde_json::Value;
use std::process::{Command, Stdio};
use support::{path, stderr_of_failure, stdout_ok, tiny_lite};

#[test]
fn a_file_that_is_not_safetensors_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_lite().join("config.json");
    let out = tmp.path().join("q");
    stdout_ok(&["convert", path(&tiny_lite()), "-o", path(&out)]);
    for args in [
        vec!["convert", path(&config), "-o", path(&tmp.path().join("x"))],
        vec!["inspect", path(&config)],
        vec!["verify", path(&config), path(&out)],
    ] {
        let e = stderr_of_failure(&args);
        for needle in [
            "config.json",
            "not a safetensors file",
            "starts with '{'",
            "pass the checkpoint directory",
        ] {
            assert!(e.contains(needle), "{args:?}: no '{needle}' in {e}");
        }
        assert!(!e.contains("7165896756295633531"), "{e}");
    }
}

#[test]
fn verify_with_its_arguments_swapped_suggests_the_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    stdout_ok(&["convert", path(&tiny_lite()), "-o", path(&out)]);
    let e = stderr_of_failure(&["verify", path(&out), path(&tiny_lite())]);
    assert!(e.contains("swapped"), "{e}");
    assert!(
        e.contains(&format!(
            "tquant verify {} {}",
            path(&tiny_lite()),
            path(&out)
        )),
        "{e}"
    );
    assert!(!e.contains("no tensor named"), "{e}");
    // Two originals: nothing to verify, and it says so.
    let e = stderr_of_failure(&["verify", path(&tiny_lite()), path(&tiny_lite())]);
    assert!(e.contains("holds no quantized tensor"), "{e}");
}

#[test]
fn bnb_layout_says_exactly_what_it_supports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let o = path(&out);
    let m = tiny_lite();
    let e = stderr_of_failure(&[
        "convert",
        path(&m),
        "-o",
        o,
        "--layout",
        "bnb",
        "--format",
        "sf4",
    ]);
    assert!(
        e.contains("--format nf4 only") && e.contains("got sf4"),
        "{e}"
    );
    assert!(
        !e.contains("f32 / block"),
        "f32 scales are what bnb stores: {e}"
    );
    let e = stderr_of_failure(&[
        "convert",
        path(&m),
        "-o",
        o,
        "--layout",
        "bnb",
        "--scale-dtype",
        "f16",
    ]);
    assert!(
        e.contains("f32 scales only") && e.contains("got f16"),
        "{e}"
    );
    let e = stderr_of_failure(&[
        "convert",
        path(&m),
        "-o",
        o,
        "--layout",
        "bnb",
        "--block",
        "48",
    ]);
    assert!(e.contains("got 48") && e.contains("4096"), "{e}");
}

fn cores() -> usize {
    std::thread::available_parallelism().unwrap().get()
}

#[test]
fn threads_zero_means_one_per_core_everywhere() {
    for cmd in ["convert", "run", "eval", "logits", "bench"] {
        let help = stdout_ok(&[cmd, "--help"]);
        assert!(help.contains("0: one per core"), "{cmd} --help: {help}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let json = stdout_ok(&[
        "convert",
        path(&tiny_lite()),
        "-o",
        path(&out),
        "--threads",
        "0",
        "--json",
    ]);
    let summary: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["threads"], cores());
    let bench = stdout_ok(&[
        "bench",
        "gemv",
        "--rows",
        "64",
        "--cols",
        "64",
        "--threads",
        "0",
        "--reps",
        "1",
        "--read-mib",
        "8",
    ]);
    assert!(bench.contains(&format!("{} thread(s)", cores())), "{bench}");
}

#[test]
fn formats_table_has_the_source_column() {
    let text = stdout_ok(&["formats"]);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.contains("name") && header.contains("source"),
        "{header}"
    );
    let nf4 = lines.find(|l| l.starts_with("nf4 ")).unwrap();
    assert!(nf4.contains("bitsandbytes"), "{nf4}");
}

#[test]
fn bench_says_when_the_matrix_fits_in_cache() {
    let text = stdout_ok(&[
        "bench",
        "gemv",
        "--rows",
        "256",
        "--cols",
        "512",
        "--threads",
        "1",
        "--reps",
        "1",
        "--read-mib",
        "8",
    ]);
    // A 0.5 MiB f32 matrix fits in any L2 or L3 cache; when /sys does not say how big the
    // caches are, the bench says that instead.
    assert!(
        text.contains("fits in the L") || text.contains("cache sizes unknown"),
        "{text}"
    );
}

/// Runs tquant with stdout on a pipe whose reading end is closed before tquant starts (`| head`
/// that has finished): it must neither panic nor fail. A shell holds the writing end and waits
/// a moment before it becomes tquant, so the reader is surely gone by then.
fn into_closed_pipe(args: &[&str]) -> std::process::Child {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"sleep 0.3; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_tquant"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child
}

fn assert_closed_pipe_ok(args: &[&str], child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("q");
    stdout_ok(&["convert", path(&tiny_lite()), "-o", path(&q)]);
    let m = tiny_lite();
    let rep = tmp.path().join("rep");
    let q2 = tmp.path().join("q2");
    let text = support::root().join("tests/data/model/heldout_head.txt");
    let cases = [
        vec!["formats"],
        vec!["formats", "--json"],
        vec!["inspect", path(&q)],
        vec!["verify", path(&m), path(&q)],
        vec!["logits", path(&m), "--tokens", "1,2"],
        vec![
            "eval",
            path(&m),
            "--text",
            path(&text),
            "--max-bytes",
            "300",
        ],
        vec![
            "eval",
            path(&m),
            "--text",
            path(&text),
            "--max-bytes",
            "300",
            "--json",
        ],
        vec!["run", path(&m), "--prompt", "fn main", "--max-tokens", "4"],
        vec![
            "bench",
            "gemv",
            "--rows",
            "64",
            "--cols",
            "64",
            "--reps",
            "1",
            "--read-mib",
            "8",
        ],
        vec![
            "report",
            path(&m),
            "--weights-only",
            "--formats",
            "nf4",
            "-o",
            path(&rep),
        ],
        vec!["convert", path(&m), "-o", path(&q2)],
    ];
    // All started at once: each waits out its own delay before writing, not one after another.
    let children: Vec<_> = cases.iter().map(|a| into_closed_pipe(a)).collect();
    for (args, child) in cases.iter().zip(children) {
        assert_closed_pipe_ok(args, child);
    }
}
