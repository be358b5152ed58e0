//! The C ABI from C: compiles `tests/c/kernels_abi.c` against `include/tquant.h`, links the
//! kernels' static library and runs it. Skips (with a note) only when no C compiler is found.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest `libtquant_kernels*.a` next to this test binary (cargo builds the crate's
/// staticlib with its rlib).
fn static_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for dir in [deps, deps.parent()?] {
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libtquant_kernels") && name.ends_with(".a") {
                found.push((e.metadata().ok()?.modified().ok()?, e.path()));
            }
        }
    }
    found.into_iter().max().map(|(_, p)| p)
}

#[test]
fn c_program_calls_the_abi_and_gets_right_results() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("skipped: no C compiler ('{cc}')");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = static_library().expect("cargo builds libtquant_kernels.a with the tests");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("kernels_abi");
    let out = Command::new(&cc)
        .args(["-std=c99", "-O1", "-Wall", "-I"])
        .arg(root.join("include"))
        .arg(root.join("tests/c/kernels_abi.c"))
        .arg(&lib)
        .args([
            "-lpthread",
            "-ldl",
            "-lm",
            "-lrt",
            "-lutil",
            "-lgcc_s",
            "-o",
        ])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "the C test failed:\n{stdout}");
    eprintln!("{}", stdout.trim());
    assert!(stdout.starts_with("ok"), "{stdout}");
}
