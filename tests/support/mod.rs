//! Helpers shared by the integration tests: running the `tquant` binary, the bundled model, and
//! comparing a quantized model with its dequantized weights. Each test crate uses a part.
#![allow(dead_code)]

pub mod tools;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tquant::convert::header::{serialize_header, OutEntry};
use tquant::convert::{Checkpoint, Dtype};
use tquant::formats::sample::Rng;
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

/// Whether `/usr/bin/time` (GNU time, for `-v`'s peak RSS) is there; says so when it is not, and
/// the peak-memory measurement that asked is skipped.
pub fn time_available() -> bool {
    let ok = Path::new("/usr/bin/time").exists();
    if !ok {
        eprintln!("note: /usr/bin/time is not available; skipping the peak-memory measurement");
    }
    ok
}

/// Runs `tquant ARGS` under `/usr/bin/time -v`; it must succeed. Its output, and its peak RSS in
/// bytes.
pub fn tquant_peak_rss<I, S>(args: I) -> (Output, u64)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_tquant"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let peak = max_rss_bytes(&stderr);
    (o, peak)
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

/// `v` as bf16 bytes (round to nearest even).
pub fn bf16_bytes(v: f32) -> [u8; 2] {
    let b = v.to_bits();
    (((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16).to_le_bytes()
}

/// `v` as IEEE f16 bytes (round to nearest even).
pub fn f16_bytes(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// Writes a bf16 safetensors file of `tensors` (name, shape), streaming: each tensor's bytes
/// come from `pool` (bf16 values) at random offsets, or, for names ending in `norm.weight`,
/// are ones. Returns the data bytes written.
pub fn write_bf16_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    pool: &[u8],
    rng: &mut Rng,
) -> u64 {
    write_half_safetensors(path, tensors, pool, rng, Dtype::BF16)
}

/// [`write_bf16_safetensors`] for a 16-bit `dtype` (`BF16` or `F16`): `pool` holds values of
/// that dtype.
pub fn write_half_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    pool: &[u8],
    rng: &mut Rng,
    dtype: Dtype,
) -> u64 {
    let one = match dtype {
        Dtype::BF16 => bf16_bytes(1.0),
        Dtype::F16 => f16_bytes(1.0),
        other => panic!("{other:?} is not a 16-bit float dtype"),
    };
    let (mut entries, mut pos) = (Vec::new(), 0u64);
    for (name, shape) in tensors {
        let len = shape.iter().product::<usize>() as u64 * 2;
        entries.push(OutEntry {
            name: name.clone(),
            dtype,
            shape: shape.clone(),
            begin: pos,
            end: pos + len,
        });
        pos += len;
    }
    let header = serialize_header(&entries, &BTreeMap::new(), 0);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    for (name, shape) in tensors {
        let mut left = shape.iter().product::<usize>() * 2;
        if name.ends_with("norm.weight") {
            for _ in 0..left / 2 {
                f.write_all(&one).unwrap();
            }
            continue;
        }
        while left > 0 {
            let start = (rng.below((pool.len() / 2) as u64) as usize) * 2;
            let n = (pool.len() - start).min(left);
            f.write_all(&pool[start..start + n]).unwrap();
            left -= n;
        }
    }
    f.flush().unwrap();
    pos
}

/// `MemAvailable` of /proc/meminfo in KiB, where the system has it.
pub fn available_memory_kb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
