//! Helpers shared by the integration tests: running the `tquant` binary, the bundled model, and
//! comparing a quantized model with its dequantized weights. Each test crate uses a part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tquant::convert::Checkpoint;
use tquant::model::{ModelError, TensorData, TensorSource};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled example model.
pub fn tiny_lite() -> PathBuf {
    root().join("examples/tiny-lite")
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn tquant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tquant"))
        .args(args)
        .output()
        .expect("runs tquant")
}

/// Stdout of a run that must succeed.
pub fn stdout_ok(args: &[&str]) -> String {
    let out = tquant(args);
    assert!(
        out.status.success(),
        "tquant {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stderr of a run that must fail.
pub fn stderr_of_failure(args: &[&str]) -> String {
    let out = tquant(args);
    assert!(!out.status.success(), "tquant {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A checkpoint with every quantized tensor dequantized to f32 by the converter's reader.
pub struct Dequantized(pub Checkpoint);

impl TensorSource for Dequantized {
    fn contains(&self, name: &str) -> bool {
        self.0.names().any(|n| n == name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        let w = self.0.get(name)?;
        Ok(TensorData::Dense {
            shape: w.shape().to_vec(),
            values: w.to_f32()?,
        })
    }
}

/// Largest absolute difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The peak resident set size, in bytes, that `/usr/bin/time -v` printed on stderr.
pub fn max_rss_bytes(time_stderr: &str) -> u64 {
    let kb: u64 = time_stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .expect("time -v reports the maximum resident set size");
    kb * 1024
}
