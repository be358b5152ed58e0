//! Output safety: an existing output is never replaced without --force, a full disk or a killed
//! run leaves nothing that looks complete at the output path, two runs racing for one output
//! cannot both win, and an unwritable output is a clear error.

use crate::hostile_support;

use hostile_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{convert, Checkpoint, ConvertError, ConvertOptions};

/// A checkpoint with `n` quantizable 256x1024 f32 matrices (1 MiB each) and a kept embedding.
fn sized_model(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors = vec![f32s(
        "model.embed_tokens.weight",
        &[64, 256],
        &values(16384, 1),
    )];
    for i in 0..n {
        tensors.push(f32s(
            &format!("model.layers.{i}.mlp.up_proj.weight"),
            &[256, 1024],
            &values(256 * 1024, 10 + i as u64),
        ));
    }
    std::fs::write(dir.join("model.safetensors"), st_bytes(&tensors, &[])).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    dir.to_path_buf()
}

/// Entries of `dir` other than `keep` must all be clearly named temporary directories.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    listing(dir)
        .into_iter()
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn existing_output_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(&tmp.path().join("model"));
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep me").unwrap();
    assert_clean_error(
        &tquant(&["convert", p(&model), "-o", p(&out)]),
        &["output exists; pass --force"],
    );
    assert_eq!(listing(&out), ["precious.txt"]);
    let file_out = tmp.path().join("out.file");
    std::fs::write(&file_out, "a file").unwrap();
    assert_clean_error(
        &tquant(&["convert", p(&model), "-o", p(&file_out)]),
        &["out.file", "output exists"],
    );
    assert_eq!(std::fs::read_to_string(&file_out).unwrap(), "a file");

    // --force replaces only what tquant wrote: a directory or file of the user's is refused,
    // named, and left as it was.
    let forced = tquant(&["convert", p(&model), "-o", p(&out), "--force"]);
    assert_clean_error(
        &forced,
        &["precious.txt", "not written by tquant", "another output"],
    );
    assert_eq!(listing(&out), ["precious.txt"]);
    assert_eq!(
        std::fs::read_to_string(out.join("precious.txt")).unwrap(),
        "keep me"
    );
    let forced = tquant(&["convert", p(&model), "-o", p(&file_out), "--force"]);
    assert_clean_error(&forced, &["out.file", "not written by tquant"]);
    assert_eq!(std::fs::read_to_string(&file_out).unwrap(), "a file");

    // A previous tquant output is replaced whole, and no temporary directory is left behind.
    let ours = tmp.path().join("ours");
    assert_success(&tquant(&[
        "convert",
        p(&model),
        "-o",
        p(&ours),
        "--format",
        "nf4",
    ]));
    assert_success(&tquant(&[
        "convert",
        p(&model),
        "-o",
        p(&ours),
        "--format",
        "int4",
        "--force",
    ]));
    let config = std::fs::read_to_string(ours.join("config.json")).unwrap();
    assert!(config.contains("\"int4\""), "{config}");
    assert!(Checkpoint::open(&ours).unwrap().is_quantized());
    assert_eq!(
        leftovers(tmp.path(), &["model", "out", "out.file", "ours"]),
        Vec::<String>::new()
    );
    // A note the user added to a tquant output is theirs: --force refuses, naming it.
    std::fs::write(ours.join("notes.txt"), "mine").unwrap();
    let before = listing(&ours);
    let forced = tquant(&["convert", p(&model), "-o", p(&ours), "--force"]);
    assert_clean_error(&forced, &["notes.txt", "not written by tquant"]);
    assert_eq!(listing(&ours), before);

    // Never the input itself, even with --force.
    assert_clean_error(
        &tquant(&["convert", p(&model), "-o", p(&model), "--force"]),
        &["would replace the input"],
    );
    assert!(model.join("model.safetensors").exists());
}

#[test]
fn unwritable_output_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(&tmp.path().join("model"));
    let file = tmp.path().join("regular-file");
    std::fs::write(&file, "x").unwrap();
    // Tests run as root, so permissions block nothing: use paths no one can create.
    for out in [file.join("out"), PathBuf::from("/proc/tquant-hostile-out")] {
        let res = tquant(&["convert", p(&model), "-o", p(&out)]);
        assert_clean_error(&res, &[]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            stderr.contains(&*out.parent().unwrap().to_string_lossy()),
            "{stderr}"
        );
        assert!(!out.exists());
    }
    assert_eq!(
        leftovers(tmp.path(), &["model", "regular-file"]),
        Vec::<String>::new()
    );
}

/// Runs `convert` from a shell that first applies `limits` (ulimit lines).
fn convert_limited(limits: &str, model: &Path, out: &Path) -> std::process::Output {
    let script = format!("{limits}\nexec \"$0\" convert \"$1\" -o \"$2\" --format nf4 --threads 1");
    Command::new("bash")
        .args([
            "-c",
            &script,
            env!("CARGO_BIN_EXE_tquant"),
            p(model),
            p(out),
        ])
        .output()
        .expect("bash runs")
}

#[test]
fn file_size_limit_fails_cleanly_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sized_model(&tmp.path().join("model"), 2);
    let out = tmp.path().join("out");
    // SIGXFSZ would kill the process before it could clean up: ignore it so writes past the
    // limit fail with EFBIG, as a full disk fails with ENOSPC.
    let res = convert_limited("trap '' XFSZ\nulimit -f 256", &model, &out);
    if res.status.code() == Some(127) {
        eprintln!("skipped: bash cannot set ulimit -f here");
        return;
    }
    assert_clean_error(&res, &["File too large"]);
    assert!(!out.exists());
    assert_eq!(leftovers(tmp.path(), &["model"]), Vec::<String>::new());
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", p(at)])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sized_model(&tmp.path().join("model"), 4);
    let Some(fs) = Tmpfs::mount(&tmp.path().join("small-disk"), "400k") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)");
        return;
    };
    // ~610 KiB of output into 400 KiB: the shard is created sparse at its final size, so the
    // writes themselves run out of space, midway.
    let out = fs.0.join("out");
    let res = tquant(&[
        "convert",
        p(&model),
        "-o",
        p(&out),
        "--format",
        "nf4",
        "--threads",
        "1",
    ]);
    assert_clean_error(&res, &["No space left on device"]);
    assert!(!out.exists());
    assert_eq!(
        listing(&fs.0),
        Vec::<String>::new(),
        "leftovers on the full disk"
    );
    // The same conversion fits once there is room.
    drop(fs);
    let Some(fs) = Tmpfs::mount(&tmp.path().join("big-disk"), "8m") else {
        return;
    };
    let out = fs.0.join("out");
    assert_success(&tquant(&[
        "convert",
        p(&model),
        "-o",
        p(&out),
        "--format",
        "nf4",
    ]));
    assert!(Checkpoint::open(&out).unwrap().is_quantized());
}

#[test]
fn sigkill_mid_conversion_leaves_nothing_complete_looking() {
    // SIGKILL on Unix: no chance to clean up.
    interrupted_conversion(|child| child.kill().unwrap());
}

#[test]
fn ctrl_c_mid_conversion_leaves_nothing_complete_looking() {
    interrupted_conversion(|child| {
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
    });
}

/// Interrupts a conversion once it writes its temporary output: nothing at the output path,
/// only a clearly named temporary directory that is no checkpoint, and the next run into the
/// same output removes that leftover.
fn interrupted_conversion(interrupt: impl FnOnce(&mut std::process::Child)) {
    let tmp = tempfile::tempdir().unwrap();
    let model = sized_model(&tmp.path().join("model"), 64);
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tquant"))
        .args(["convert", p(&model), "-o", p(&out), "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it is writing its temporary output, then kill it mid-way.
    let started = Instant::now();
    let temp_prefix = ".out.tquant-tmp-";
    loop {
        let writing = listing(tmp.path())
            .iter()
            .any(|n| n.starts_with(temp_prefix));
        if writing || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    interrupt(&mut child);
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the conversion finished before it could be killed; make the model bigger"
    );
    assert!(!out.exists(), "a killed run left its output path");
    let left = leftovers(tmp.path(), &["model"]);
    assert!(!left.is_empty(), "the temporary output was never seen");
    for name in &left {
        assert!(name.starts_with(temp_prefix), "unclear leftover '{name}'");
        let dir = tmp.path().join(name);
        assert!(
            Checkpoint::open(&dir).is_err(),
            "leftover '{name}' opens as a complete checkpoint"
        );
    }
    // A later run is not confused by the leftover.
    assert_success(&tquant(&[
        "convert",
        p(&model),
        "-o",
        p(&out),
        "--format",
        "int4",
    ]));
    assert!(Checkpoint::open(&out).unwrap().is_quantized());
    assert_eq!(
        leftovers(tmp.path(), &["model", "out"]),
        Vec::<String>::new(),
        "the interrupted run's temporary output was not cleaned up"
    );
}

#[test]
fn racing_processes_for_one_output_one_wins_the_other_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sized_model(&tmp.path().join("model"), 3);
    for round in 0..4 {
        let out = tmp.path().join(format!("out{round}"));
        let spawn = |format: &str| {
            Command::new(env!("CARGO_BIN_EXE_tquant"))
                .args(["convert", p(&model), "-o", p(&out), "--format", format])
                // Embeddings at source precision: every quantized tensor has the format.
                .args(["--threads", "1", "--keep-as", "source"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn("nf4"), spawn("int4"));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            wins,
            1,
            "round {round}: {wins} winners\n{}\n{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        let loser = if a.status.success() { &b } else { &a };
        assert_clean_error(loser, &["output exists"]);
        // The winner's output is whole: one format throughout.
        let ckpt = Checkpoint::open(&out).unwrap();
        let formats: std::collections::BTreeSet<String> = ckpt
            .names()
            .filter_map(|n| ckpt.quant_info(n).map(|i| i.format.clone()))
            .collect();
        assert_eq!(formats.len(), 1, "{formats:?}");
    }
    let left = leftovers(tmp.path(), &["model", "out0", "out1", "out2", "out3"]);
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn racing_threads_for_one_output_one_wins_the_other_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sized_model(&tmp.path().join("model"), 2);
    let out = tmp.path().join("out");
    let run = RunOptions {
        force: false,
        threads: Some(1),
    };
    let results: Vec<Result<_, ConvertError>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["nf4", "int4", "e2m1"]
            .into_iter()
            .map(|f| {
                let opts = ConvertOptions::from_args(
                    Some(f),
                    None,
                    None,
                    None,
                    tquant::convert::Layout::Tquant,
                    Default::default(),
                )
                .unwrap();
                let (model, out, run) = (&model, &out, &run);
                s.spawn(move || convert(model, out, &opts, run, &NoProgress))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(r, ConvertError::OutputExists { .. }),
            "loser failed with: {r}"
        );
    }
    Checkpoint::open(&out).unwrap();
    assert_eq!(
        leftovers(tmp.path(), &["model", "out"]),
        Vec::<String>::new()
    );
}
