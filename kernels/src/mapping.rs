//! Read-only memory maps. Mapping a file is `unsafe` in Rust (another process could change the
//! file underneath), and the workspace keeps every `unsafe` block in this crate, so the one
//! mapping primitive lives here. It maps a file the caller has opened; it reads nothing itself.

use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::io;

/// Bytes `offset..offset + len` of a file, mapped read-only. An empty range maps nothing.
#[derive(Debug)]
pub struct ReadOnlyMap {
    map: Option<Mmap>,
}

impl ReadOnlyMap {
    /// Maps `len` bytes of `file` from `offset`. The caller checks the range lies in the file.
    pub fn new(file: &File, offset: u64, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self { map: None });
        }
        // SAFETY: the map is read-only and only ever exposed as `&[u8]`. memmap2 marks mapping
        // unsafe because another process could truncate or rewrite the file while it is mapped;
        // checkpoints are treated as immutable inputs while tquant runs (as every mmap-based
        // model loader does), and callers check the range against the file's length first.
        let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file) }?;
        Ok(Self { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn maps_the_requested_range_and_empty_ranges() {
        let path = std::env::temp_dir().join(format!("tquant-map-{}", std::process::id()));
        File::create(&path)
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(ReadOnlyMap::new(&f, 3, 4).unwrap().bytes(), b"3456");
        assert_eq!(ReadOnlyMap::new(&f, 0, 0).unwrap().bytes(), b"");
        std::fs::remove_file(&path).unwrap();
    }
}
