//! The files of a checkpoint: one safetensors file or a directory of shards (with
//! `model.safetensors.index.json`), each memory-mapped with its header validated, the physical
//! tensors by name and `config.json`. What the tensors mean (quantized parts, FP8 block scales)
//! is decided above, in the `checkpoint` module.

use crate::dtype::{extend_f32, is_float};
use crate::error::ConvertError;
use crate::header::{read_header, Header, TensorEntry};
use crate::mmap::{map_range, MappedRange};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of a single-file checkpoint inside a directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the model configuration beside the weights.
pub const CONFIG_FILE: &str = "config.json";

/// One safetensors file of a checkpoint.
#[derive(Debug)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// The open file (mapped again for ranges read on their own).
    pub file: File,
    /// Its validated header.
    pub header: Header,
    map: MappedRange,
}

impl Shard {
    /// Opens and validates one safetensors file.
    pub fn open(path: &Path) -> Result<Shard, ConvertError> {
        let mut file = File::open(path).map_err(|e| ConvertError::io(path, e))?;
        let header = read_header(&mut file, path)?;
        let len = file
            .metadata()
            .map_err(|e| ConvertError::io(path, e))?
            .len();
        let len = usize::try_from(len)
            .map_err(|_| ConvertError::header(path, "file too large for this platform"))?;
        let map = map_range(&file, path, 0, len)?;
        Ok(Shard {
            path: path.to_path_buf(),
            file,
            header,
            map,
        })
    }

    /// The bytes of a tensor of this shard (its offsets were validated at open).
    pub fn bytes(&self, entry: &TensorEntry) -> &[u8] {
        &self.map.bytes()[entry.offset as usize..entry.offset as usize + entry.len]
    }

    /// The shard's file name.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}
/// Where a physical tensor lives.
#[derive(Debug, Clone, Copy)]
struct Slot {
    shard: usize,
    entry: usize,
}

/// The opened, validated files of a checkpoint and their physical tensors.
#[derive(Debug)]
pub(crate) struct ShardSet {
    root: PathBuf,
    shards: Vec<Shard>,
    physical: BTreeMap<String, Slot>,
    config: Option<Value>,
}

impl ShardSet {
    /// Opens a `.safetensors` file, or a directory holding `model.safetensors` or shards with
    /// `model.safetensors.index.json`, validating every header and the index.
    pub(crate) fn open(path: &Path) -> Result<ShardSet, ConvertError> {
        let meta = std::fs::metadata(path).map_err(|e| ConvertError::io(path, e))?;
        let (root, files) = if meta.is_dir() {
            (path.to_path_buf(), shard_files(path)?)
        } else {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (dir, vec![path.to_path_buf()])
        };
        let shards = files
            .iter()
            .map(|f| Shard::open(f))
            .collect::<Result<Vec<_>, _>>()?;
        let mut physical = BTreeMap::new();
        for (s, shard) in shards.iter().enumerate() {
            for (e, entry) in shard.header.entries.iter().enumerate() {
                if let Some(prev) = physical.insert(entry.name.clone(), Slot { shard: s, entry: e })
                {
                    return Err(ConvertError::tensor(
                        &shard.path,
                        &entry.name,
                        format!("also present in {}", shards[prev.shard].path.display()),
                    ));
                }
            }
        }
        if meta.is_dir() {
            check_index(path, &shards, &physical)?;
        }
        let config = read_config(&root.join(CONFIG_FILE))?;
        Ok(ShardSet {
            root,
            shards,
            physical,
            config,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub(crate) fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// Physical names, sorted.
    pub(crate) fn physical_names(&self) -> impl Iterator<Item = &String> {
        self.physical.keys()
    }

    /// Physical names in file order, shard after shard.
    pub(crate) fn raw_names(&self) -> impl Iterator<Item = &str> {
        self.shards
            .iter()
            .flat_map(|s| s.header.entries.iter().map(|e| e.name.as_str()))
    }

    /// The shard and header entry of a physical tensor.
    pub(crate) fn locate(&self, name: &str) -> Option<(&Shard, &TensorEntry)> {
        let slot = self.physical.get(name)?;
        let shard = &self.shards[slot.shard];
        Some((shard, &shard.header.entries[slot.entry]))
    }

    /// Index of the shard holding a physical tensor.
    pub(crate) fn shard_of(&self, name: &str) -> Option<usize> {
        self.physical.get(name).map(|s| s.shard)
    }

    /// The file a tensor lives in, or the checkpoint's directory.
    pub(crate) fn file_of(&self, name: &str) -> PathBuf {
        self.locate(name)
            .map(|(s, _)| s.path.clone())
            .unwrap_or_else(|| self.root.clone())
    }

    /// A physical tensor's header entry and bytes (its name as stored).
    pub(crate) fn entry(&self, name: &str) -> Result<(&TensorEntry, &[u8]), ConvertError> {
        let (shard, entry) = self.locate(name).ok_or_else(|| ConvertError::NotFound {
            path: self.root.clone(),
            tensor: name.to_string(),
        })?;
        Ok((entry, shard.bytes(entry)))
    }

    /// Reads a dense float tensor's values (used on small tensors such as codebooks).
    pub(crate) fn read_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let (entry, bytes) = self.entry(name)?;
        if !is_float(entry.dtype) {
            return Err(ConvertError::NotFloat {
                path: self.file_of(name),
                tensor: name.to_string(),
                dtype: entry.dtype,
            });
        }
        let mut out = Vec::with_capacity(entry.numel());
        extend_f32(entry.dtype, bytes, &mut out);
        Ok(out)
    }
}

/// The safetensors files of a checkpoint directory.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, ConvertError> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        let map = read_index(&index)?;
        let mut files: Vec<&String> = map.values().collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConvertError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if found.len() == 1 {
        return Ok(found);
    }
    Err(ConvertError::NotACheckpoint {
        path: dir.to_path_buf(),
        reason: format!(
            "no {SINGLE_FILE} or {INDEX_FILE} (and {} other .safetensors files)",
            found.len()
        ),
    })
}

/// The `weight_map` of an index file, with every shard name checked to be a plain file name.
pub fn read_index(path: &Path) -> Result<BTreeMap<String, String>, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ConvertError::header(path, format!("index is not JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ConvertError::header(path, "index has no 'weight_map' object"))?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| ConvertError::tensor(path, name, "weight_map entry is not a string"))?;
        let plain = Path::new(file)
            .file_name()
            .is_some_and(|f| f == std::ffi::OsStr::new(file));
        if !plain || file == ".." || !file.ends_with(".safetensors") {
            return Err(ConvertError::tensor(
                path,
                name,
                format!("shard '{file}' is not a .safetensors file name in the same directory"),
            ));
        }
        out.insert(name.clone(), file.to_string());
    }
    if out.is_empty() {
        return Err(ConvertError::header(path, "weight_map is empty"));
    }
    Ok(out)
}

/// Every weight_map entry must be in the shard it names.
fn check_index(
    dir: &Path,
    shards: &[Shard],
    physical: &BTreeMap<String, Slot>,
) -> Result<(), ConvertError> {
    let index = dir.join(INDEX_FILE);
    if !index.exists() {
        return Ok(());
    }
    let by_file: HashMap<String, usize> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.file_name(), i))
        .collect();
    for (name, file) in read_index(&index)? {
        match physical.get(&name) {
            Some(slot) if Some(&slot.shard) == by_file.get(&file) => {}
            Some(slot) => {
                return Err(ConvertError::tensor(
                    &index,
                    &name,
                    format!(
                        "index says {file} but the tensor is in {}",
                        shards[slot.shard].file_name()
                    ),
                ))
            }
            None => {
                return Err(ConvertError::tensor(
                    &index,
                    &name,
                    format!("listed in the index but absent from {file}"),
                ))
            }
        }
    }
    Ok(())
}

fn read_config(path: &Path) -> Result<Option<Value>, ConvertError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ConvertError::header(path, format!("config is not JSON: {e}")))?;
    Ok(Some(v))
}
