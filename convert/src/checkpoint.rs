//! The checkpoint reader: one safetensors file or a directory of shards (with
//! `model.safetensors.index.json`), memory-mapped, every header validated at open. It reads
//! original checkpoints and quantized ones (tquant's layout, bitsandbytes NF4, HF MXFP4) alike.

use crate::detect::detect_quantized;
use crate::dtype::{extend_f32, is_float};
use crate::fp8::{file_of, is_fp8, pair_scales, BlockScales, Fp8Slot};
use crate::header::{read_header, Header, TensorEntry};
use crate::mmap::{map_range, MappedRange};
use crate::quantized::{QuantInfo, QuantizedView};
use crate::ConvertError;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of a single-file checkpoint inside a directory.
pub const SINGLE_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// One safetensors file of a checkpoint.
#[derive(Debug)]
pub struct Shard {
    pub path: PathBuf,
    pub file: File,
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

/// A dense tensor as stored: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
    /// The block scales of an FP8 weight (read as `fp8 * scale`).
    pub scales: Option<BlockScales<'a>>,
}

impl TensorView<'_> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as f32 (F32, F16, BF16 or F64 tensors; FP8 ones with their block scales).
    pub fn to_f32(&self) -> Result<Vec<f32>, ConvertError> {
        if let Some(scales) = &self.scales {
            return crate::fp8::dequantize(self.name, self.dtype, self.shape, self.bytes, scales);
        }
        if is_fp8(self.dtype) {
            return Err(ConvertError::Invalid {
                tensor: self.name.to_string(),
                reason: format!("{} values without their block scales", self.dtype),
            });
        }
        let mut out = Vec::with_capacity(self.numel());
        if !extend_f32(self.dtype, self.bytes, &mut out) {
            return Err(ConvertError::Invalid {
                tensor: self.name.to_string(),
                reason: format!("dtype {} is not a float dtype", self.dtype),
            });
        }
        Ok(out)
    }
}

/// A weight as a model sees it: stored dense, or quantized.
#[derive(Debug, Clone, Copy)]
pub enum Weight<'a> {
    Dense(TensorView<'a>),
    Quantized(QuantizedView<'a>),
}

impl<'a> Weight<'a> {
    /// Logical shape (a quantized tensor's original shape).
    pub fn shape(&self) -> &'a [usize] {
        match self {
            Weight::Dense(t) => t.shape,
            Weight::Quantized(q) => q.shape(),
        }
    }

    /// The values as f32, dequantizing a quantized weight.
    pub fn to_f32(&self) -> Result<Vec<f32>, ConvertError> {
        match self {
            Weight::Dense(t) => t.to_f32(),
            Weight::Quantized(q) => q.dequantize().map_err(|e| ConvertError::Invalid {
                tensor: q.name.to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

/// Where a physical tensor lives.
#[derive(Debug, Clone, Copy)]
struct Slot {
    shard: usize,
    entry: usize,
}

/// A quantized tensor found at open: its description and where its codes and scales are.
#[derive(Debug)]
pub(crate) struct QuantSlot {
    pub info: QuantInfo,
    pub codes: String,
    pub scales: String,
    /// Physical tensors that belong to this quantized tensor (hidden from `names()`).
    pub parts: Vec<String>,
    /// bitsandbytes double quantization: `scales` holds 8-bit codes of the absmax.
    pub nested: Option<NestedAbsmax>,
}

/// bitsandbytes' double-quantized absmax: block `i`'s absmax is
/// `map[code_i] * absmax[i / block] + offset` in f32 (bitsandbytes' `dequantize_blockwise`, then
/// the offset), decoded on first use into f32 bytes, the form the rest of the reader takes.
#[derive(Debug)]
pub(crate) struct NestedAbsmax {
    pub map: Vec<f32>,
    pub absmax: Vec<f32>,
    pub block: usize,
    pub offset: f32,
    pub decoded: OnceLock<Vec<u8>>,
}

impl NestedAbsmax {
    fn decode(&self, codes: &[u8]) -> Vec<u8> {
        codes
            .iter()
            .enumerate()
            .flat_map(|(i, &c)| {
                let v = self.map[c as usize] * self.absmax[i / self.block] + self.offset;
                v.to_le_bytes()
            })
            .collect()
    }
}

/// An opened checkpoint (original or quantized).
#[derive(Debug)]
pub struct Checkpoint {
    root: PathBuf,
    shards: Vec<Shard>,
    physical: BTreeMap<String, Slot>,
    quantized: BTreeMap<String, QuantSlot>,
    /// FP8 weights and their block scales.
    fp8: BTreeMap<String, Fp8Slot>,
    /// Logical names: physical tensors that are not parts of a quantized tensor, and the
    /// quantized tensors' names.
    names: Vec<String>,
    config: Option<Value>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, or a directory holding `model.safetensors` or shards with
    /// `model.safetensors.index.json`, and validates every header and quantized tensor.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, ConvertError> {
        let path = path.as_ref();
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
        let mut ckpt = Checkpoint {
            root,
            shards,
            physical,
            quantized: BTreeMap::new(),
            fp8: BTreeMap::new(),
            names: Vec::new(),
            config,
        };
        ckpt.fp8 = pair_scales(&ckpt, &ckpt.root.join(CONFIG_FILE))?;
        ckpt.quantized = detect_quantized(&ckpt)?;
        let hidden: std::collections::HashSet<&str> = ckpt
            .quantized
            .values()
            .flat_map(|q| q.parts.iter().map(String::as_str))
            .chain(ckpt.fp8.values().map(|f| f.scales.as_str()))
            .collect();
        let mut names: Vec<String> = ckpt
            .physical
            .keys()
            .filter(|n| !hidden.contains(n.as_str()))
            .cloned()
            .collect();
        names.extend(ckpt.quantized.keys().cloned());
        names.sort();
        names.dedup();
        ckpt.names = names;
        Ok(ckpt)
    }

    /// The directory the checkpoint lives in (where `config.json` is looked for).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Logical tensor names, sorted: quantized tensors under their original names, without
    /// their stored parts.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The `config.json` beside the checkpoint, if any.
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// True when at least one tensor is quantized.
    pub fn is_quantized(&self) -> bool {
        !self.quantized.is_empty()
    }

    /// True when some weight is stored as FP8 with block scales.
    pub fn has_fp8(&self) -> bool {
        !self.fp8.is_empty()
    }

    /// The block-scale tensor of an FP8 weight.
    pub fn fp8_scales(&self, name: &str) -> Option<&str> {
        self.fp8.get(name).map(|f| f.scales.as_str())
    }

    /// True for the block-scale tensor of an FP8 weight (a part of that weight, not a tensor of
    /// its own).
    pub fn is_fp8_scale(&self, name: &str) -> bool {
        name.strip_suffix(crate::fp8::SCALE_SUFFIX)
            .and_then(|base| self.fp8.get(base))
            .is_some_and(|f| f.scales == name)
    }

    /// The description of a quantized tensor.
    pub fn quant_info(&self, name: &str) -> Option<&QuantInfo> {
        self.quantized.get(name).map(|q| &q.info)
    }

    /// A weight by logical name: dense, or quantized (codes and scales borrowed from the map;
    /// refused when a stored scale is not finite, which reads every scale once).
    pub fn get(&self, name: &str) -> Result<Weight<'_>, ConvertError> {
        if let Some((name, q)) = self.quantized.get_key_value(name) {
            let view = self.quantized_parts(name)?;
            if let Some(reason) = view.non_finite_scale() {
                let path = self.locate(&q.scales).map(|(s, _)| s.path.clone());
                return Err(ConvertError::tensor(
                    path.unwrap_or_else(|| self.root().to_path_buf()),
                    name,
                    reason,
                ));
            }
            return Ok(Weight::Quantized(view));
        }
        Ok(Weight::Dense(self.raw(name)?))
    }

    /// A quantized tensor's parts without [`Checkpoint::get`]'s scan of its scales: for
    /// callers that checked it through `get` once and come back on every product (the
    /// model's kernels).
    pub fn quantized_parts(&self, name: &str) -> Result<QuantizedView<'_>, ConvertError> {
        let Some((name, q)) = self.quantized.get_key_value(name) else {
            return Err(ConvertError::NotFound {
                path: self.root().to_path_buf(),
                tensor: name.to_string(),
            });
        };
        let stored = self.raw(&q.scales)?.bytes;
        let scales = match &q.nested {
            Some(n) => n.decoded.get_or_init(|| n.decode(stored)).as_slice(),
            None => stored,
        };
        Ok(QuantizedView {
            name,
            info: &q.info,
            codes: self.raw(&q.codes)?.bytes,
            scales,
        })
    }

    /// A stored tensor by its physical name (quantized parts included; an FP8 weight comes
    /// with its block scales).
    pub fn raw(&self, name: &str) -> Result<TensorView<'_>, ConvertError> {
        let (name, slot) =
            self.physical
                .get_key_value(name)
                .ok_or_else(|| ConvertError::NotFound {
                    path: self.root.clone(),
                    tensor: name.to_string(),
                })?;
        let shard = &self.shards[slot.shard];
        let entry = &shard.header.entries[slot.entry];
        Ok(TensorView {
            name,
            dtype: entry.dtype,
            shape: &entry.shape,
            bytes: shard.bytes(entry),
            scales: self.block_scales(name, &shard.path)?,
        })
    }

    /// The block scales of an FP8 weight stored in `weight_path`.
    fn block_scales<'a>(
        &'a self,
        name: &str,
        weight_path: &'a Path,
    ) -> Result<Option<BlockScales<'a>>, ConvertError> {
        let Some(slot) = self.fp8.get(name) else {
            return Ok(None);
        };
        let (shard, entry) = self.locate(&slot.scales).ok_or_else(|| {
            ConvertError::tensor(file_of(self, name), name, "block scales vanished")
        })?;
        Ok(Some(BlockScales {
            name: &entry.name,
            path: &shard.path,
            weight_path,
            block: slot.block,
            bytes: shard.bytes(entry),
        }))
    }

    /// Physical names in file order, shard after shard.
    pub fn raw_names(&self) -> impl Iterator<Item = &str> {
        self.shards
            .iter()
            .flat_map(|s| s.header.entries.iter().map(|e| e.name.as_str()))
    }

    /// The shard and header entry of a physical tensor.
    pub fn locate(&self, name: &str) -> Option<(&Shard, &TensorEntry)> {
        let slot = self.physical.get(name)?;
        let shard = &self.shards[slot.shard];
        Some((shard, &shard.header.entries[slot.entry]))
    }

    /// Index of the shard holding a physical tensor.
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.physical.get(name).map(|s| s.shard)
    }

    /// A dense float tensor's values as f32, read through a map of its own byte range that is
    /// dropped on return: the file pages it touches leave the process's resident set, where
    /// reading through the whole-file map would keep them (a model loader converting every
    /// weight would otherwise hold the whole file resident beside its f32 copy).
    pub fn dense_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let (shard, entry) = self.locate(name).ok_or_else(|| ConvertError::NotFound {
            path: self.root.clone(),
            tensor: name.to_string(),
        })?;
        let map = map_range(&shard.file, &shard.path, entry.offset, entry.len)?;
        TensorView {
            name: &entry.name,
            dtype: entry.dtype,
            shape: &entry.shape,
            bytes: map.bytes(),
            scales: self.block_scales(name, &shard.path)?,
        }
        .to_f32()
    }

    /// Reads a float tensor's values (used on small tensors such as codebooks).
    pub(crate) fn read_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let t = self.raw(name)?;
        if !is_float(t.dtype) {
            let path = self
                .locate(name)
                .map(|(s, _)| s.path.clone())
                .unwrap_or_default();
            return Err(ConvertError::tensor(
                path,
                name,
                format!("expected a float tensor, found {}", t.dtype),
            ));
        }
        t.to_f32()
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
