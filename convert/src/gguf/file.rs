//! The GGUF v3 container (gguf-py's `gguf_writer.py`, ggml's `gguf.cpp`): little-endian header
//! (`GGUF`, version 3, tensor count, key-value count), typed key-value pairs, tensor infos
//! (name, dimensions fastest first, ggml type, offset into the data section), then the data
//! section, starting and with every tensor starting on a multiple of the alignment.
//!
//! [`GgufFile`] is the layout; [`GgufFile::write`] streams it to a temporary file beside the
//! target, fsyncs it and renames it into place.

use super::blocks::GgmlType;
use super::error::GgufError;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The alignment written as `general.alignment` and used for the data.
pub const ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// A metadata value (the GGUF value types tquant writes).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    Str(String),
    /// `ARRAY` of `STRING`.
    Strs(Vec<String>),
    /// `ARRAY` of `INT32`.
    I32s(Vec<i32>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::Str(_) => 8,
            Self::Strs(_) | Self::I32s(_) => 9,
        }
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.type_id().to_le_bytes())?;
        match self {
            Self::U32(v) => w.write_all(&v.to_le_bytes()),
            Self::I32(v) => w.write_all(&v.to_le_bytes()),
            Self::F32(v) => w.write_all(&v.to_le_bytes()),
            Self::Bool(v) => w.write_all(&[*v as u8]),
            Self::Str(s) => write_str(w, s),
            Self::Strs(v) => {
                w.write_all(&8u32.to_le_bytes())?;
                w.write_all(&(v.len() as u64).to_le_bytes())?;
                v.iter().try_for_each(|s| write_str(w, s))
            }
            Self::I32s(v) => {
                w.write_all(&5u32.to_le_bytes())?;
                w.write_all(&(v.len() as u64).to_le_bytes())?;
                v.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
            }
        }
    }
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// One tensor's entry: its name, shape (numpy order, slowest first) and type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF name (`blk.3.ffn_gate_exps.weight`).
    pub name: String,
    /// Shape, slowest dimension first (as numpy and safetensors give it; stored reversed).
    pub shape: Vec<usize>,
    /// Its ggml type.
    pub ty: GgmlType,
}

impl TensorInfo {
    /// Bytes of its data.
    pub fn nbytes(&self) -> usize {
        self.ty.bytes(self.shape.iter().product())
    }
}

/// A GGUF file's metadata and tensor table; the data comes from a callback when written.
#[derive(Debug, Clone, Default)]
pub struct GgufFile {
    /// Key-value pairs in the order written.
    pub kv: Vec<(String, Value)>,
    /// Tensors in the order their data is written.
    pub tensors: Vec<TensorInfo>,
}

fn pad(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT - n
}

impl GgufFile {
    /// Sets `key` (replacing an earlier value, as gguf-py does).
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.kv.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.kv.push((key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn write_header(&self, w: &mut impl Write) -> std::io::Result<u64> {
        let mut head = Vec::new();
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            write_str(&mut head, k)?;
            v.write(&mut head)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut head, &t.name)?;
            head.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                head.extend_from_slice(&(d as u64).to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            let n = t.nbytes() as u64;
            offset += n + pad(n);
        }
        let p = pad(head.len() as u64);
        head.resize(head.len() + p as usize, 0);
        w.write_all(&head)?;
        Ok(head.len() as u64)
    }

    /// Writes the file at `path` atomically. `data(i, sink)` must write exactly the bytes of
    /// tensor `i` (it may call `sink` several times, e.g. once per expert). Refuses an existing
    /// `path` unless `force`.
    pub fn write(
        &self,
        path: &Path,
        force: bool,
        mut data: impl FnMut(
            usize,
            &mut dyn FnMut(&[u8]) -> Result<(), GgufError>,
        ) -> Result<(), GgufError>,
    ) -> Result<u64, GgufError> {
        if path.exists() && !force {
            return Err(GgufError::OutputExists {
                path: path.to_path_buf(),
            });
        }
        if path.is_dir() {
            return Err(GgufError::OutputIsDir {
                path: path.to_path_buf(),
            });
        }
        let tmp = temp_path(path);
        let io = |e| GgufError::Io {
            path: tmp.clone(),
            source: e,
        };
        let file = File::create(&tmp).map_err(io)?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut total = self.write_header(&mut w).map_err(io)?;
        for (i, t) in self.tensors.iter().enumerate() {
            let want = t.nbytes() as u64;
            let mut got = 0u64;
            data(i, &mut |bytes: &[u8]| {
                got += bytes.len() as u64;
                w.write_all(bytes).map_err(|e| GgufError::Io {
                    path: tmp.clone(),
                    source: e,
                })
            })?;
            if got != want {
                return Err(GgufError::Internal {
                    tensor: t.name.clone(),
                    reason: format!("{got} bytes of data written for {want}"),
                });
            }
            let p = pad(want);
            w.write_all(&vec![0u8; p as usize]).map_err(io)?;
            total += want + p;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| GgufError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        std::mem::forget(guard);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(total)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tquant-partial-{}", std::process::id()))
}

/// Removes the temporary file of an interrupted or failed write.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GgufFile {
        let mut f = GgufFile::default();
        f.set("general.architecture", Value::Str("deepseek2".into()));
        f.set("general.alignment", Value::U32(32));
        f.set("x.list", Value::Strs(vec!["a".into(), "bc".into()]));
        f.tensors.push(TensorInfo {
            name: "a.weight".into(),
            shape: vec![3],
            ty: GgmlType::F32,
        });
        f.tensors.push(TensorInfo {
            name: "b.weight".into(),
            shape: vec![2, 32],
            ty: GgmlType::Q4_0,
        });
        f
    }

    #[test]
    fn layout_is_gguf_v3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let f = sample();
        let n = f
            .write(&path, false, |i, sink| {
                sink(&vec![i as u8 + 1; f.tensors[i].nbytes()])
            })
            .unwrap();
        let b = std::fs::read(&path).unwrap();
        assert_eq!(b.len() as u64, n);
        assert_eq!(&b[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 3);
        // First key: u64 length, bytes, type 8 (string), u64 length, bytes.
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 20);
        assert_eq!(&b[32..52], b"general.architecture");
        // Data: 12 bytes of tensor 0 padded to 32, then 36 bytes of tensor 1, padded.
        let data = b.len() - 32 - 64;
        assert_eq!(data % 32, 0);
        assert_eq!(&b[data..data + 12], &[1u8; 12]);
        assert_eq!(&b[data + 12..data + 32], &[0u8; 20]);
        assert_eq!(&b[data + 32..data + 68], &[2u8; 36]);
        assert_eq!(b.len() % 32, 0);
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn existing_output_is_refused_and_failed_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"keep").unwrap();
        let f = sample();
        let e = f.write(&path, false, |_, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("m.gguf"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        // Short data is an error and the target and directory are left as they were.
        let e = f.write(&path, true, |_, sink| sink(&[0u8; 1])).unwrap_err();
        assert!(e.to_string().contains("a.weight"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
