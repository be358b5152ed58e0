//! The C API from C: compiles the C programs against `include/tquant.h`, links them with the
//! library this crate builds (static and shared) and runs them. The README's C example is
//! `examples/c/quantize_matmul.c`, included there verbatim (checked here). Without a C compiler
//! the tests skip with a note, except under CI (`CI=true`), where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The C compiler (`$CC` or `cc`), or `None` (and a note) when there is none outside CI.
fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_ok() {
        return Some(cc);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("no C compiler ('{cc}'); CI must test the C API (install gcc)");
    }
    eprintln!("skipped: no C compiler ('{cc}')");
    None
}

/// The newest `libtquant_capi.<ext>` cargo built with this test (the crate's `staticlib` and
/// `cdylib`, in the profile's directory or its `deps/`).
fn library(ext: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for dir in [deps, deps.parent().unwrap()] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libtquant_capi") && name.ends_with(&format!(".{ext}")) {
                found.push((e.metadata().unwrap().modified().unwrap(), e.path()));
            }
        }
    }
    found
        .into_iter()
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("cargo builds libtquant_capi.{ext} with the tests"))
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Static,
    Shared,
}

/// Compiles `source` (warnings are errors) and links it with the library.
fn build(cc: &str, source: &Path, link: Link, out: &Path) -> PathBuf {
    let exe = out.join(format!(
        "{}-{link:?}",
        source.file_stem().unwrap().to_string_lossy()
    ));
    let mut cmd = Command::new(cc);
    cmd.args(["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Static => {
            cmd.arg(library("a"))
                .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"]);
        }
        Link::Shared => {
            let so = library("so");
            let dir = so.parent().unwrap();
            cmd.arg(format!("-L{}", dir.display()))
                .arg(format!("-Wl,-rpath,{}", dir.display()))
                .args(["-ltquant_capi", "-lm"]);
        }
    }
    let done = cmd.output().unwrap();
    assert!(
        done.status.success(),
        "{cc} {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&done.stderr)
    );
    exe
}

/// Runs `exe` and returns its output, which must start with `ok` when `ok` is set.
fn run(exe: &Path, args: &[&Path]) -> String {
    let done = Command::new(exe).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        done.status.success(),
        "{} failed:\n{stdout}\n{}",
        exe.display(),
        String::from_utf8_lossy(&done.stderr)
    );
    stdout
}

/// A small quantized checkpoint (sf4, fitted nu): `model.layers.0.mlp.down_proj.weight`
/// [48, 80], a fused `model.layers.0.mlp.experts.down_proj` [2, 32, 64] and a kept
/// `model.norm.weight` [64]; the raw f32 bytes of the first, `down_proj.f32`; and the same
/// model in bitsandbytes' layout, `bnb`.
fn checkpoint(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use safetensors::tensor::TensorView;
    let mut state = 99u64;
    let mut values = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                (u * 0.1).to_le_bytes()
            })
            .collect()
    };
    let tensors = [
        ("model.layers.0.mlp.down_proj.weight", vec![48, 80]),
        ("model.layers.0.mlp.experts.down_proj", vec![2, 32, 64]),
        ("model.norm.weight", vec![64]),
    ]
    .map(|(name, shape)| (name, shape.clone(), values(shape.iter().product())));
    let input = dir.join("float");
    std::fs::create_dir_all(&input).unwrap();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let v = TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap();
            (*name, v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &input.join("model.safetensors")).unwrap();
    std::fs::write(input.join("config.json"), "{}").unwrap();
    let raw = dir.join("down_proj.f32");
    std::fs::write(&raw, &tensors[0].2).unwrap();

    let output = dir.join("quantized");
    let opts = tquant_convert::ConvertOptions::default();
    convert(&input, &output, &opts);
    let bnb = dir.join("bnb");
    let opts = tquant_convert::ConvertOptions::from_args(
        None,
        None,
        None,
        None,
        tquant_convert::Layout::Bnb,
        tquant_convert::Policy::default(),
    )
    .unwrap();
    convert(&input, &bnb, &opts);
    (output, raw, bnb)
}

fn convert(input: &Path, output: &Path, opts: &tquant_convert::ConvertOptions) {
    tquant_convert::convert(
        input,
        output,
        opts,
        &tquant_convert::RunOptions::default(),
        &tquant_convert::NoProgress,
    )
    .unwrap();
}

#[test]
fn c_program_calls_every_function_and_gets_right_results() {
    let Some(cc) = compiler() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, raw, bnb) = checkpoint(dir.path());
    for link in [Link::Static, Link::Shared] {
        let exe = build(&cc, &root().join("capi/tests/c/api.c"), link, dir.path());
        let out = run(&exe, &[&ckpt, &raw, &bnb]);
        eprint!("{link:?}: {out}");
        assert!(out.starts_with("ok"), "{out}");
    }
}

#[test]
fn c_program_on_caller_owned_buffers_gets_right_results() {
    let Some(cc) = compiler() else { return };
    let dir = tempfile::tempdir().unwrap();
    let exe = build(
        &cc,
        &root().join("capi/tests/c/raw.c"),
        Link::Static,
        dir.path(),
    );
    let out = run(&exe, &[]);
    eprint!("{out}");
    assert!(out.starts_with("ok"), "{out}");
}

#[test]
fn readme_example_is_the_tested_program_and_runs() {
    let source = root().join("examples/c/quantize_matmul.c");
    let program = std::fs::read_to_string(&source).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```c\n{program}```\n")),
        "README.md's C block must be examples/c/quantize_matmul.c verbatim"
    );
    let Some(cc) = compiler() else { return };
    let dir = tempfile::tempdir().unwrap();
    for link in [Link::Static, Link::Shared] {
        let exe = build(&cc, &source, link, dir.path());
        let out = run(&exe, &[]);
        eprint!("{link:?}: {out}");
        assert!(out.contains(": 0 outputs off"), "{out}");
        assert!(
            out.contains("asking for nf5: status -4, \"") && out.contains("nf5"),
            "{out}"
        );
    }
}
