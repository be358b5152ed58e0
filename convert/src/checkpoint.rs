//! The checkpoint reader: one safetensors file or a directory of shards (with
//! `model.safetensors.index.json`), memory-mapped, every header validated at open. It reads
//! original checkpoints and quantized ones (tquant's layout, bitsandbytes NF4, HF MXFP4) alike.
use crate::detect::{detect_quantized, QuantSlot};
use crate::dtype::{extend_f32, is_fp8};
use crate::error::ConvertError;
use crate::fp8::{pair_scales, BlockScales, Fp8Slot};
use crate::header::TensorEntry;
use crate::mmap::map_range;
use crate::quantized::{QuantInfo, QuantizedView};
use crate::shards::ShardSet;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::shards::{read_index, Shard, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};

/// A dense tensor as stored: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    /// Its name in the file.
    pub name: &'a str,
    /// The stored dtype.
    pub dtype: Dtype,
    /// The shape.
    pub shape: &'a [usize],
    /// Little-endian bytes, as stored.
    pub bytes: &'a [u8],
    /// The block scales of an FP8 weight (read as `fp8 * scale`).
    pub scales: Option<BlockScales<'a>>,
}

impl TensorView<'_> {
    /// Number of elements.
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
    /// Stored in a float (or FP8) dtype.
    Dense(TensorView<'a>),
    /// Stored quantized, in any of the layouts.
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
/// An opened checkpoint (original or quantized).
#[derive(Debug)]
pub struct Checkpoint {
    files: ShardSet,
    quantized: BTreeMap<String, QuantSlot>,
    /// FP8 weights and their block scales.
    fp8: BTreeMap<String, Fp8Slot>,
    /// Logical names: physical tensors that are not parts of a quantized tensor, and the
    /// quantized tensors' names.
    names: Vec<String>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, or a directory holding `model.safetensors` or shards with
    /// `model.safetensors.index.json`, and validates every header and quantized tensor.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint, ConvertError> {
        let files = ShardSet::open(path.as_ref())?;
        let quantized = detect_quantized(&files)?;
        // NVFP4's E4M3 block scales are parts of their weight, not FP8 weights of their own.
        let parts: std::collections::HashSet<&str> = quantized
            .values()
            .flat_map(|q| q.parts.iter().map(String::as_str))
            .collect();
        let fp8 = pair_scales(&files, &files.root().join(CONFIG_FILE), &parts)?;
        let mut hidden = parts;
        hidden.extend(fp8.values().map(|f| f.scales.as_str()));
        let mut names: Vec<String> = files
            .physical_names()
            .filter(|n| !hidden.contains(n.as_str()))
            .cloned()
            .collect();
        names.extend(quantized.keys().cloned());
        names.sort();
        names.dedup();
        Ok(Checkpoint {
            files,
            quantized,
            fp8,
            names,
        })
    }

    /// The directory the checkpoint lives in (where `config.json` is looked for).
    pub fn root(&self) -> &Path {
        self.files.root()
    }

    /// Its safetensors files, in the order their tensors are numbered.
    pub fn shards(&self) -> &[Shard] {
        self.files.shards()
    }

    /// Logical tensor names, sorted: quantized tensors under their original names, without
    /// their stored parts.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The `config.json` beside the checkpoint, if any.
    pub fn config(&self) -> Option<&Value> {
        self.files.config()
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
        let scales = match (&q.nested, &q.e4m3) {
            (Some(n), _) => n.decoded.get_or_init(|| n.decode(stored)).as_slice(),
            (None, Some(s)) => s.decoded.get_or_init(|| s.decode(stored)).as_slice(),
            (None, None) => stored,
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
        let (shard, entry) = self
            .files
            .locate(name)
            .ok_or_else(|| ConvertError::NotFound {
                path: self.root().to_path_buf(),
                tensor: name.to_string(),
            })?;
        Ok(TensorView {
            name: &entry.name,
            dtype: entry.dtype,
            shape: &entry.shape,
            bytes: shard.bytes(entry),
            scales: self.block_scales(&entry.name, &shard.path)?,
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
            ConvertError::tensor(self.files.file_of(name), name, "block scales vanished")
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
        self.files.raw_names()
    }

    /// The shard and header entry of a physical tensor.
    pub fn locate(&self, name: &str) -> Option<(&Shard, &TensorEntry)> {
        self.files.locate(name)
    }

    /// Index of the shard holding a physical tensor.
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.files.shard_of(name)
    }

    /// A dense float tensor's values as f32, read through a map of its own byte range that is
    /// dropped on return: the file pages it touches leave the process's resident set, where
    /// reading through the whole-file map would keep them (a model loader converting every
    /// weight would otherwise hold the whole file resident beside its f32 copy).
    pub fn dense_f32(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let (shard, entry) = self.locate(name).ok_or_else(|| ConvertError::NotFound {
            path: self.root().to_path_buf(),
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
}
