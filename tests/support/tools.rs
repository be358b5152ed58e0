//! External tools a test needs (a C compiler, Python with numpy). Under CI (`CI` set and not
//! `false`/`0`) a missing tool fails the test; elsewhere the test is skipped with a note written
//! straight to the terminal, since the test harness captures `eprintln!`.
//!
//! Depends only on std, so a test of any crate can include it with
//! `#[path = ".../tests/support/tools.rs"] mod tools;`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the tests run under CI, where every tool must be present.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Reports a tool `test` needs but does not have: panics under CI, else prints a note to the
/// terminal (uncaptured) so the skip is seen. The caller returns after it.
pub fn missing_tool(test: &str, why: &str) {
    if under_ci() {
        panic!("{test}: {why} (CI=true: a missing tool is a failure, not a skip)");
    }
    // Straight to the file descriptor: `eprintln!` would be captured with the test's output.
    let _ = writeln!(
        std::io::stderr().lock(),
        "\nSKIPPED {test}: {why} (under CI=true this fails)"
    );
}

/// `name` found the way a shell finds it (a path if it contains `/`, else on `PATH`).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_file(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_file(p))
}

/// The program `name`, or `None` (after [`missing_tool`]) when it is not installed.
pub fn require_tool(test: &str, name: &str) -> Option<PathBuf> {
    let found = find_program(name);
    if found.is_none() {
        missing_tool(test, &format!("`{name}` is not installed"));
    }
    found
}

/// A Python interpreter (`$TQUANT_PYTHON`, default `python3`) that imports every module in
/// `modules`, or `None` (after [`missing_tool`]).
pub fn require_python(test: &str, modules: &[&str]) -> Option<PathBuf> {
    let name = std::env::var("TQUANT_PYTHON").unwrap_or_else(|_| "python3".into());
    let py = require_tool(test, &name)?;
    let import = format!("import {}", modules.join(", "));
    let out = Command::new(&py).args(["-c", &import]).output();
    match out {
        Ok(o) if o.status.success() => Some(py),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("").to_owned();
            missing_tool(
                test,
                &format!("`{name}` cannot `{import}` ({last}); set TQUANT_PYTHON"),
            );
            None
        }
        Err(e) => {
            missing_tool(test, &format!("`{name}` does not run: {e}"));
            None
        }
    }
}
