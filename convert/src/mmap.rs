//! Read-only memory maps of checkpoint files, through `tquant_kernels::mapping` (the workspace
//! keeps every `unsafe` block in the kernels crate).

use crate::error::ConvertError;
use std::fs::File;
use std::path::Path;
use tquant_kernels::mapping::ReadOnlyMap;

/// Bytes `offset..offset + len` of `file`, mapped read-only. An empty range maps nothing.
#[derive(Debug)]
pub struct MappedRange {
    map: ReadOnlyMap,
}

impl MappedRange {
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }
}

/// Maps a byte range of a file that the caller has checked lies inside the file.
pub fn map_range(
    file: &File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<MappedRange, ConvertError> {
    let map = ReadOnlyMap::new(file, offset, len).map_err(|e| ConvertError::io(path, e))?;
    Ok(MappedRange { map })
}
