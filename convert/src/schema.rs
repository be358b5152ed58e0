//! What a quantized tensor is, as files record it: the description of its stored parts
//! ([`QuantInfo`], kept in a shard's `__metadata__` for tquant's own layout), the layouts, the
//! part names and the metadata keys. Plain data: no I/O, nothing of the quantizer.

use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use tquant_formats::pack::row_bytes;
use tquant_formats::q8_0::{Q8_BLOCK, Q8_NAME};
use tquant_formats::{ScaleDtype, ScaleRule};

/// The format name of per-matrix learned tables (a recipe, and a tensor's `format` in files,
/// each matrix then naming its table as `custom:...`).
pub const LEARNED: &str = "learned";

/// The format name of learned tables per row (a recipe, and a tensor's and each matrix's
/// `format` in files): the tables are stored as the `.row_tables` part.
pub const LEARNED_ROW: &str = "learned_row";

/// Suffix of the row tables part (`learned_row`): F16 `[E?, rows, 16]`, row `r`'s values in code
/// order.
pub const ROW_TABLES_SUFFIX: &str = ".row_tables";

/// Version of the on-disk description; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// `__metadata__` key prefix of a quantized tensor's description: `tquant.<name>`.
pub const META_PREFIX: &str = "tquant.";
/// `__metadata__` key carrying [`FORMAT_VERSION`].
pub const META_VERSION: &str = "tquant.version";
/// Suffixes of the stored parts of a quantized tensor `<name>` in tquant's layout.
pub const CODES_SUFFIX: &str = ".codes";
/// Suffix of the scales part.
pub const SCALES_SUFFIX: &str = ".scales";
/// Suffix of the codebook part.
pub const CODEBOOK_SUFFIX: &str = ".codebook";

/// How the bytes of a quantized tensor are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// tquant's: per matrix, row-major packed codes (element 2j in the low nibble, rows start on a
    /// byte), scales `[rows, blocks_per_row]`, codebook in code order.
    #[default]
    Tquant,
    /// bitsandbytes NF4 as transformers saves it: blocks over the flattened tensor, element 2j in
    /// the high nibble, f32 absmax per block, `quant_map` codebook.
    Bnb,
    /// OCP MXFP4 as Hugging Face stores it: `_blocks` `[.., rows, cols/32, 16]` (low nibble first,
    /// per-row blocks of 32, i.e. tquant's code layout) and `_scales` E8M0 `[.., rows, cols/32]`.
    Mxfp4,
    /// compressed-tensors (llm-compressor, vLLM): `<module>.weight_packed` U8 `[rows, cols/2]`
    /// (tquant's code layout) and `weight_scale`: E4M3 per 16 with an f32 `weight_global_scale`
    /// divisor (`nvfp4-pack-quantized`), or E8M0 per 32 (`mxfp4-pack-quantized`).
    #[serde(rename = "compressed-tensors")]
    CompressedTensors,
    /// NVIDIA ModelOpt NVFP4 (TensorRT-LLM, vLLM): `<m>.weight` U8 `[rows, cols/2]`,
    /// `<m>.weight_scale` F8_E4M3 `[rows, cols/16]`, `<m>.weight_scale_2` F32 scalar, a
    /// multiplier; `hf_quant_config.json` beside config.json.
    #[serde(rename = "modelopt")]
    ModelOpt,
    /// One GGUF file llama.cpp loads (ggml Q4_0 / IQ4_NL blocks), written by
    /// [`crate::gguf::convert_gguf`], not by the safetensors converter.
    Gguf,
}

impl Layout {
    /// The name settings and metadata use (`tquant`, `bnb`, `mxfp4`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tquant => "tquant",
            Self::Bnb => "bnb",
            Self::Mxfp4 => "mxfp4",
            Self::CompressedTensors => "compressed-tensors",
            Self::ModelOpt => "modelopt",
            Self::Gguf => "gguf",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tquant" => Ok(Self::Tquant),
            "bnb" => Ok(Self::Bnb),
            "mxfp4" => Ok(Self::Mxfp4),
            "compressed-tensors" => Ok(Self::CompressedTensors),
            "modelopt" => Ok(Self::ModelOpt),
            "gguf" => Ok(Self::Gguf),
            _ => Err(format!(
                "unknown layout '{s}' (tquant, bnb, mxfp4, compressed-tensors, modelopt, gguf)"
            )),
        }
    }
}

/// One of compressed-tensors' 4-bit float formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtFormat {
    /// `nvfp4-pack-quantized`.
    Nvfp4,
    /// `mxfp4-pack-quantized`.
    Mxfp4,
    /// `pack-quantized` INT4 (symmetric, `group` strategy, -8..7 stored as `q + 8`), the group
    /// the user's.
    Int4,
}

impl CtFormat {
    /// The format's name in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nvfp4 => "nvfp4-pack-quantized",
            Self::Mxfp4 => "mxfp4-pack-quantized",
            Self::Int4 => "pack-quantized",
        }
    }

    /// Elements per block (INT4's group is chosen: `None`).
    pub fn block(self) -> Option<usize> {
        match self {
            Self::Nvfp4 => Some(tquant_formats::nvfp4::NVFP4_BLOCK),
            Self::Mxfp4 => Some(tquant_formats::layouts::MXFP4_BLOCK),
            Self::Int4 => None,
        }
    }

    /// The format that stores `e2m1` with these blocks and scales, if any.
    pub fn of(
        format: &str,
        block: tquant_formats::BlockSize,
        scale_dtype: ScaleDtype,
    ) -> Option<Self> {
        match (format, block, scale_dtype) {
            (
                "e2m1",
                tquant_formats::BlockSize::Elements(tquant_formats::nvfp4::NVFP4_BLOCK),
                ScaleDtype::E4m3,
            ) => Some(Self::Nvfp4),
            (
                "e2m1",
                tquant_formats::BlockSize::Elements(tquant_formats::layouts::MXFP4_BLOCK),
                ScaleDtype::E8m0,
            ) => Some(Self::Mxfp4),
            (
                "int4_full",
                tquant_formats::BlockSize::Elements(g),
                ScaleDtype::F32 | ScaleDtype::Bf16 | ScaleDtype::F16,
            ) if g > 0 && g % 8 == 0 => Some(Self::Int4),
            _ => None,
        }
    }

    /// The float format a config.json names (`pack-quantized` is read on its own).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Nvfp4, Self::Mxfp4]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

/// A fitted location-scale Student-t, as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitInfo {
    /// Degrees of freedom.
    pub nu: f64,
    /// Location.
    pub loc: f64,
    /// Scale.
    pub scale: f64,
}

impl From<tquant_formats::TFit> for FitInfo {
    fn from(f: tquant_formats::TFit) -> Self {
        Self {
            nu: f.nu,
            loc: f.loc,
            scale: f.scale,
        }
    }
}

/// One quantized matrix (a 2-D tensor, or one expert of a fused 3-D tensor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixInfo {
    /// Format name, parseable by `tquant_formats::Format` (`sf4:nu=4.237`, `nf4`).
    pub format: String,
    /// Degrees of freedom of the Student Float codebook, when it is one.
    pub nu: Option<f64>,
    /// Fit on block-standardised values (what an SF codebook is built from).
    pub fit: Option<FitInfo>,
    /// Fit on the whole matrix's values (the paper's per-tensor profile).
    pub fit_tensor: Option<FitInfo>,
    /// Values in code order; stored as the `.codebook` tensor, not in the metadata.
    #[serde(skip)]
    pub codebook: Vec<f32>,
    /// `learned_row`: each row's table, `[rows, 2^bits]` values exact in f16 (stored as the
    /// `.row_tables` part, not in the metadata); empty otherwise, and `codebook` is then empty.
    #[serde(skip)]
    pub row_tables: Vec<f32>,
    /// NVFP4's f32 tensor scale: a divisor (compressed-tensors' `weight_global_scale`), or in
    /// the ModelOpt layout a multiplier (`weight_scale_2`); `None`
    /// for every other format. In tquant's own layout the codebook already holds
    /// `values / global_scale`, so decoding never needs it; it is kept as a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_scale: Option<f32>,
}

/// Everything needed to interpret a quantized tensor's bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantInfo {
    /// Version of the description ([`FORMAT_VERSION`]).
    pub version: u32,
    /// How the bytes are laid out.
    pub layout: Layout,
    /// Base format asked for (`sf4`, `nf4`); each matrix names its exact codebook.
    pub format: String,
    /// Bits per code.
    pub bits: u32,
    /// Logical shape: `[rows, cols]` or `[experts, rows, cols]`.
    pub shape: Vec<usize>,
    /// dtype of the original tensor (`BF16`).
    pub dtype: String,
    /// Elements per block (the row length for whole-row blocks).
    pub block: usize,
    #[serde(with = "scale_dtype_name")]
    /// The dtype each scale is stored in.
    pub scale_dtype: ScaleDtype,
    /// How tquant chose each block's scale (`absmax`, `search`); `None` when not recorded
    /// (files of other tools, older files). Decoding does not depend on it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "scale_rule_name"
    )]
    pub scale_rule: Option<ScaleRule>,
    /// How the tensor was calibrated (GPTQ, tokens per matrix); `None` when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationRecord>,
    /// One per matrix: 1 for a 2-D tensor, `experts` for a 3-D one (bitsandbytes: always 1).
    pub matrices: Vec<MatrixInfo>,
    /// bitsandbytes double quantization: the absmax are stored as 8-bit codes with an f32
    /// absmax per this many of them (readers decode them to the f32 `scale_dtype` says).
    /// Never in tquant's own files.
    #[serde(skip)]
    pub nested_absmax_block: Option<usize>,
    /// NVFP4 read from another tool's files: the scales are stored as E4M3 bytes and readers
    /// see them decoded to the f32 `scale_dtype` says, each divided by its matrix's
    /// `global_scale` (compressed-tensors), or multiplied by it (ModelOpt's `weight_scale_2`).
    /// Never in tquant's own files.
    #[serde(skip)]
    pub e4m3_stored: bool,
}

mod scale_dtype_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use tquant_formats::ScaleDtype;

    pub fn serialize<S: Serializer>(d: &ScaleDtype, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ScaleDtype, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod scale_rule_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use tquant_formats::ScaleRule;

    pub fn serialize<S: Serializer>(r: &Option<ScaleRule>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => s.serialize_str(r.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ScaleRule>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

impl QuantInfo {
    /// Number of matrices (experts): 1 for a 2-D tensor.
    pub fn experts(&self) -> usize {
        if self.shape.len() == 3 {
            self.shape[0]
        } else {
            1
        }
    }

    /// Rows of each matrix.
    pub fn rows(&self) -> usize {
        self.shape[self.shape.len() - 2]
    }

    /// Columns of each matrix.
    pub fn cols(&self) -> usize {
        self.shape[self.shape.len() - 1]
    }

    /// Elements of the whole tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Blocks per row.
    pub fn blocks_per_row(&self) -> usize {
        self.cols().div_ceil(self.block)
    }

    /// Whether this is a q8_0 tensor (int8 codes, an f16 scale per 32 along a row; no
    /// codebook), which tquant's layout stores beside its 4-bit ones.
    pub fn is_q8_0(&self) -> bool {
        self.format == Q8_NAME
    }

    /// Bytes of codes of one matrix: packed nibbles (tquant and MXFP4 layouts), one byte per
    /// element for q8_0.
    pub fn matrix_code_bytes(&self) -> usize {
        if self.is_q8_0() {
            return self.rows() * self.cols();
        }
        self.rows() * row_bytes(self.cols())
    }

    /// Bytes of scales of one matrix (tquant and MXFP4 layouts).
    pub fn matrix_scale_bytes(&self) -> usize {
        self.rows() * self.blocks_per_row() * self.scale_dtype.size()
    }

    /// Bytes of all packed codes. bitsandbytes packs the flattened tensor, two codes a byte.
    pub fn code_bytes(&self) -> usize {
        match self.layout {
            Layout::Bnb => self.numel().div_ceil(2),
            _ => self.experts() * self.matrix_code_bytes(),
        }
    }

    /// Bytes of all scales. bitsandbytes has one per block of the flattened tensor; NVFP4 adds
    /// its f32 tensor scale per matrix.
    pub fn scale_bytes(&self) -> usize {
        // tquant's layout folds the tensor scale into the codebook, which is not counted.
        let globals = match self.layout {
            Layout::Tquant => 0,
            _ => {
                self.matrices
                    .iter()
                    .filter(|m| m.global_scale.is_some())
                    .count()
                    * 4
            }
        };
        if self.e4m3_stored {
            return self.experts() * self.rows() * self.blocks_per_row() + globals;
        }
        if matches!(self.layout, Layout::CompressedTensors | Layout::ModelOpt) {
            return self.experts() * self.matrix_scale_bytes() + globals;
        }
        match self.layout {
            Layout::Bnb => {
                let blocks = self.numel().div_ceil(self.block);
                match self.nested_absmax_block {
                    Some(n) => blocks + blocks.div_ceil(n.max(1)) * 4,
                    None => blocks * self.scale_dtype.size(),
                }
            }
            _ => self.experts() * self.matrix_scale_bytes(),
        }
    }

    /// Bytes of all scales as a `QuantizedView` presents them (`scale_dtype` each; equal to
    /// [`QuantInfo::scale_bytes`] except for double-quantized bitsandbytes absmax, decoded).
    pub fn view_scale_bytes(&self) -> usize {
        match self.layout {
            Layout::Bnb => self.numel().div_ceil(self.block) * self.scale_dtype.size(),
            _ if self.e4m3_stored => self.experts() * self.matrix_scale_bytes(),
            _ => self.scale_bytes(),
        }
    }

    /// Stored bits per weight: codes and scales, and a learned table's values (a fixed
    /// format's codebook, known from its name, is excluded): 8.5 for q8_0, whose rows are whole
    /// blocks of 32.
    pub fn bits_per_weight(&self) -> f64 {
        // A learned table belongs to its matrix alone: its f32 values count, as its scales do.
        let tables = if self.format == LEARNED {
            self.matrices.len() * (1usize << self.bits) * 4
        } else if self.format == LEARNED_ROW {
            // A table of f16 values per row.
            self.matrices.len() * self.rows() * (1usize << self.bits) * 2
        } else {
            0
        };
        (self.code_bytes() + self.scale_bytes() + tables) as f64 * 8.0 / self.numel().max(1) as f64
    }

    /// A 2-D tensor of `shape` and original `dtype` stored as q8_0 in tquant's layout: codes
    /// `I8 [rows, cols]` and f16 scales `[rows, ceil(cols / 32)]`, no codebook.
    pub fn q8_0(shape: &[usize], dtype: Dtype) -> Self {
        let experts = if shape.len() == 3 { shape[0] } else { 1 };
        Self {
            version: FORMAT_VERSION,
            layout: Layout::Tquant,
            format: Q8_NAME.into(),
            bits: 8,
            shape: shape.to_vec(),
            dtype: dtype.to_string(),
            block: Q8_BLOCK,
            scale_dtype: ScaleDtype::F16,
            scale_rule: Some(ScaleRule::Absmax),
            calibration: None,
            matrices: vec![
                MatrixInfo {
                    format: Q8_NAME.into(),
                    nu: None,
                    fit: None,
                    fit_tensor: None,
                    codebook: Vec::new(),
                    row_tables: Vec::new(),
                    global_scale: None,
                };
                experts
            ],
            nested_absmax_block: None,
            e4m3_stored: false,
        }
    }

    /// The metadata JSON of tquant's layout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("QuantInfo serializes")
    }
}

/// How a quantized tensor was calibrated, in its `tquant.<name>` metadata. Decoding ignores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// `gptq`.
    pub method: String,
    /// GPTQ's relative damping.
    pub damp: f64,
    /// Whether GPTQ's act-order was used.
    pub act_order: bool,
    /// Tokens a matrix needed to be calibrated.
    pub min_tokens: u64,
    /// Per matrix (one per expert of a fused tensor): calibration tokens that reached it.
    pub tokens: Vec<u64>,
    /// Per matrix: quantized with GPTQ (`false`: too few tokens, plain rounding).
    pub calibrated: Vec<bool>,
}

/// One quantized matrix: its description and bytes in the options' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrixOut {
    /// Its description (format, nu, fits, codebook).
    pub info: MatrixInfo,
    /// Packed codes in the layout.
    pub codes: Vec<u8>,
    /// Scales in the layout.
    pub scales: Vec<u8>,
}

/// The safetensors dtype that stores scales of a scale dtype (E8M0 bytes as U8, E4M3 as F8_E4M3).
pub fn scale_storage_dtype(d: ScaleDtype) -> Dtype {
    match d {
        ScaleDtype::F32 => Dtype::F32,
        ScaleDtype::F16 => Dtype::F16,
        ScaleDtype::Bf16 => Dtype::BF16,
        ScaleDtype::E8m0 => Dtype::U8,
        ScaleDtype::E4m3 => Dtype::F8_E4M3,
    }
}
