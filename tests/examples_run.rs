//! The Cargo examples run as CI builds them, and print what the README says: the
//! accuracy-vs-area rows agree with the README's table, and the in-memory model scores a prompt.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built example `name` (`cargo test` builds every example beside the test binaries);
/// built now when a filtered run did not.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(ok.success(), "building example {name}");
    }
    path
}

fn run(name: &str) -> String {
    let out = Command::new(example(name))
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The cells of a Markdown table row.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// A cell's leading number (`447.4 (lookup)` is 447.4; `**+0.0394**` is 0.0394); `None` for `–`.
fn number(cell: &str) -> Option<f64> {
    let s = cell.trim_matches('*');
    let end = s.find([' ', '%']).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[test]
fn report_table_example_prints_the_readmes_rows() {
    let out = run("report_table");
    assert!(out.starts_with("f32: 1.7089 bits per byte"), "{out}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme
        .find("## Accuracy vs. area on the bundled model")
        .unwrap()..];
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 5, "{out}");
    for row in rows {
        let got = cells(row);
        // The README names sf4 at the paper's nu `sf4 (nu = 5)`.
        let want = section
            .lines()
            .map(cells)
            .find(|c| c[0] == got[0] || c[0].starts_with(&format!("{} (", got[0])))
            .unwrap_or_else(|| panic!("no README row for {}", got[0]));
        assert_eq!(got.len(), want.len(), "{row}");
        for (g, w) in got.iter().zip(&want).skip(1) {
            assert_eq!(number(g), number(w), "{}: {g} vs README {w}", got[0]);
        }
    }
}

#[test]
fn quantize_in_memory_example_scores_its_prompt() {
    let out = run("quantize_in_memory");
    let bpb: f64 = out
        .strip_prefix("nf4 in memory: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // A trained model scores English below a uniform byte's 8 bits, and above nothing.
    assert!(bpb > 0.5 && bpb < 8.0, "{out}");
    assert!(out.trim_end().ends_with("over 66 bytes"), "{out}");
}
