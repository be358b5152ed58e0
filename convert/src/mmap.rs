//! Read-only memory maps of checkpoint files: the crate's only `unsafe`.

use crate::ConvertError;
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::Path;

/// Bytes `offset..offset + len` of `file`, mapped read-only. An empty range maps nothing.
#[derive(Debug)]
pub struct MappedRange {
    map: Option<Mmap>,
}

impl MappedRange {
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// Maps a byte range of a file that the caller has checked lies inside the file.
pub fn map_range(
    file: &File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<MappedRange, ConvertError> {
    if len == 0 {
        return Ok(MappedRange { map: None });
    }
    #[allow(unsafe_code)]
    // SAFETY: the map is read-only and only ever exposed as `&[u8]`. memmap2 marks mapping
    // unsafe because another process could truncate or rewrite the file while it is mapped;
    // checkpoints are treated as immutable inputs while tquant runs (as every mmap-based model
    // loader does), and the range was checked against the file's length when it was opened.
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
        .map_err(|e| ConvertError::io(path, e))?;
    Ok(MappedRange { map: Some(map) })
}
