//! Finding the quantized tensors of an opened checkpoint, in any of the three layouts, and
//! checking that their stored parts agree with their description before anything reads them.

use crate::dtype::from_torch_name;
use crate::error::ConvertError;
use crate::header::dtype_name;
pub use crate::schema::scale_storage_dtype;
use crate::schema::{
    Layout, MatrixInfo, QuantInfo, CODEBOOK_SUFFIX, CODES_SUFFIX, FORMAT_VERSION, META_PREFIX,
    META_VERSION, SCALES_SUFFIX,
};
use crate::shards::ShardSet;
use safetensors::Dtype;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tquant_formats::layouts::MXFP4_BLOCK;
use tquant_formats::pack::{code_at, row_bytes};
use tquant_formats::{Format, ScaleDtype};

mod ct_int4;
mod q8_0;

/// Suffix of bitsandbytes' serialized quant state (`<weight>.quant_state.bitsandbytes__nf4`).
pub const BNB_STATE_SUFFIXES: [&str; 2] = [
    ".quant_state.bitsandbytes__nf4",
    ".quant_state.bitsandbytes__fp4",
];
/// Hugging Face MXFP4 part suffixes.
pub const MXFP4_BLOCKS: &str = "_blocks";
/// Hugging Face MXFP4's scales part suffix.
pub const MXFP4_SCALES: &str = "_scales";
/// ModelOpt's tensor-scale suffix (`X.weight_scale_2` beside the packed `X.weight`).
pub const MODELOPT_SCALE_2: &str = "_scale_2";
/// compressed-tensors' packed-weight suffix (`X.weight_packed` holds the codes of `X.weight`).
pub const CT_PACKED: &str = "_packed";

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
    /// NVFP4 of another tool: `scales` holds E4M3 bytes, decoded with the tensor scale.
    pub e4m3: Option<E4m3Scales>,
}

/// NVFP4 block scales as stored (E4M3) and the f32 tensor scale they are divided by, decoded on
/// first use into f32 bytes `e4m3(s) / divisor`, what compressed-tensors dequantizes with.
#[derive(Debug)]
pub(crate) struct E4m3Scales {
    pub tensor_scale: f32,
    /// ModelOpt multiplies by its `weight_scale_2`; compressed-tensors divides.
    pub multiply: bool,
    pub decoded: OnceLock<Vec<u8>>,
}

impl E4m3Scales {
    pub(crate) fn decode(&self, stored: &[u8]) -> Vec<u8> {
        let steps = if self.multiply {
            tquant_formats::nvfp4::modelopt_step_scales(stored, self.tensor_scale)
        } else {
            tquant_formats::nvfp4::nvfp4_step_scales(stored, self.tensor_scale)
        };
        steps.iter().flat_map(|s| s.to_le_bytes()).collect()
    }
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
    pub(crate) fn decode(&self, codes: &[u8]) -> Vec<u8> {
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

/// Every quantized tensor of the files, by logical name, each checked against its parts.
pub(crate) fn detect_quantized(
    ckpt: &ShardSet,
) -> Result<BTreeMap<String, QuantSlot>, ConvertError> {
    let mut out = BTreeMap::new();
    for shard in ckpt.shards() {
        for (key, value) in &shard.header.metadata {
            if key == META_VERSION || !key.starts_with(META_PREFIX) {
                continue;
            }
            let name = &key[META_PREFIX.len()..];
            let slot = tquant_slot(ckpt, shard.path.clone(), name, value)?;
            out.insert(name.to_string(), slot);
        }
    }
    // A `_packed` tensor is compressed-tensors' when config.json says so or its scale is there.
    let ct_config = ct_config_format(ckpt).is_some();
    for name in ckpt.raw_names() {
        if let Some(base) = BNB_STATE_SUFFIXES.iter().find_map(|s| name.strip_suffix(s)) {
            out.insert(base.to_string(), bnb_slot(ckpt, base, name)?);
        } else if let Some(base) = name.strip_suffix(MODELOPT_SCALE_2) {
            out.insert(base.to_string(), modelopt_slot(ckpt, base, name)?);
        } else if let Some(base) = name
            .strip_suffix(CT_PACKED)
            .filter(|b| ct_config || ckpt.locate(&format!("{b}_scale")).is_some())
        {
            out.insert(base.to_string(), ct_slot(ckpt, base, name)?);
        } else if let Some(base) = name.strip_suffix(MXFP4_BLOCKS) {
            let scales = format!("{base}{MXFP4_SCALES}");
            if ckpt.locate(&scales).is_some() {
                out.insert(base.to_string(), mxfp4_slot(ckpt, base, name, &scales)?);
            }
        }
    }
    Ok(out)
}

fn path_of(ckpt: &ShardSet, name: &str) -> PathBuf {
    ckpt.file_of(name)
}

/// A stored part must exist with this dtype and shape. `owner_path` is the file that describes
/// the quantized tensor (named when the part is missing).
fn expect_part(
    ckpt: &ShardSet,
    (owner_path, owner): (&Path, &str),
    part: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<(), ConvertError> {
    let Some((shard, entry)) = ckpt.locate(part) else {
        return Err(ConvertError::MissingPart {
            path: owner_path.to_path_buf(),
            tensor: owner.to_string(),
            part: part.to_string(),
        });
    };
    if entry.dtype != dtype || entry.shape != shape {
        return Err(ConvertError::PartMismatch {
            path: shard.path.clone(),
            part: part.to_string(),
            expected: (dtype, shape.to_vec()),
            found: (entry.dtype, entry.shape.clone()),
        });
    }
    Ok(())
}

/// `lead` followed by `tail`: the shape of a per-matrix part of a 2-D or 3-D tensor.
fn part_shape(info: &QuantInfo, tail: &[usize]) -> Vec<usize> {
    let mut s = if info.shape.len() == 3 {
        vec![info.shape[0]]
    } else {
        Vec::new()
    };
    s.extend_from_slice(tail);
    s
}

fn check_shape(shape: &[usize]) -> Result<(), String> {
    if !(2..=3).contains(&shape.len()) || shape.contains(&0) {
        return Err(format!(
            "shape {shape:?}: a quantized tensor is 2-D or 3-D with no empty dimension"
        ));
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .map(|_| ())
        .ok_or_else(|| format!("shape {shape:?} overflows"))
}

/// Reads and checks codebooks (`[experts?, 2^bits]` F32, finite).
fn read_codebooks(
    ckpt: &ShardSet,
    name: &str,
    experts: usize,
    len: usize,
) -> Result<Vec<Vec<f32>>, ConvertError> {
    let values = ckpt.read_f32(name)?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(ConvertError::tensor(
            path_of(ckpt, name),
            name,
            format!("codebook value {bad} is not finite"),
        ));
    }
    Ok(values
        .chunks(len)
        .take(experts)
        .map(<[f32]>::to_vec)
        .collect())
}

/// A format name of tquant's metadata must be in the catalog, with `bits` bits per code.
fn check_format(name: &str, bits: u32) -> Result<(), String> {
    if crate::options::is_auto(name) {
        // A per-matrix choice: each matrix names its own format, checked on its own.
        let spec = crate::options::AutoSpec::from_name(name).map_err(|e| e.to_string())?;
        if spec.bits() != bits {
            return Err(format!(
                "'{name}' has {} bits per code, the metadata says {bits}",
                spec.bits()
            ));
        }
        return Ok(());
    }
    if name == crate::options::LEARNED || name == crate::schema::LEARNED_ROW {
        // Each matrix's own table, named `custom:...` and checked on its own.
        return match bits {
            4 => Ok(()),
            _ => Err(format!(
                "'{name}' has 4 bits per code, the metadata says {bits}"
            )),
        };
    }
    let format: Format = name
        .parse()
        .map_err(|e| format!("unknown format '{name}': {e}"))?;
    if format.bits() != bits {
        return Err(format!(
            "format '{name}' has {} bits per code, the metadata says {bits}",
            format.bits()
        ));
    }
    Ok(())
}

fn tquant_slot(
    ckpt: &ShardSet,
    path: PathBuf,
    name: &str,
    json: &str,
) -> Result<QuantSlot, ConvertError> {
    let bad = |reason: String| ConvertError::tensor(&path, name, reason);
    let mut info: QuantInfo = serde_json::from_str(json)
        .map_err(|e| bad(format!("tquant metadata is not valid: {e}")))?;
    if info.version == 0 || info.version > FORMAT_VERSION {
        return Err(bad(format!(
            "tquant format version {} is not supported (this build reads up to {FORMAT_VERSION})",
            info.version
        )));
    }
    if info.layout != Layout::Tquant {
        return Err(bad(format!(
            "metadata layout '{}' is not tquant's",
            info.layout.name()
        )));
    }
    check_shape(&info.shape).map_err(bad)?;
    if info.is_q8_0() {
        return q8_0::q8_slot(ckpt, &path, name, info);
    }
    if !(1..=4).contains(&info.bits) || info.block == 0 {
        return Err(bad(format!(
            "bits {} / block {} out of range",
            info.bits, info.block
        )));
    }
    check_format(&info.format, info.bits).map_err(bad)?;
    for (i, m) in info.matrices.iter().enumerate() {
        check_format(&m.format, info.bits).map_err(|r| bad(format!("matrix {i}: {r}")))?;
    }
    let experts = info.experts();
    if info.matrices.len() != experts {
        return Err(bad(format!(
            "metadata describes {} matrices for {experts} experts",
            info.matrices.len()
        )));
    }
    let (rows, cols) = (info.rows(), info.cols());
    let codes = format!("{name}{CODES_SUFFIX}");
    let scales = format!("{name}{SCALES_SUFFIX}");
    let codebook = format!("{name}{CODEBOOK_SUFFIX}");
    let table_len = 1usize << info.bits;
    expect_part(
        ckpt,
        (&path, name),
        &codes,
        Dtype::U8,
        &part_shape(&info, &[rows, row_bytes(cols)]),
    )?;
    expect_part(
        ckpt,
        (&path, name),
        &scales,
        scale_storage_dtype(info.scale_dtype),
        &part_shape(&info, &[rows, info.blocks_per_row()]),
    )?;
    let codebook = if info.format == crate::schema::LEARNED_ROW {
        // A table per row instead of the matrix's codebook.
        let tables = format!("{name}{}", crate::schema::ROW_TABLES_SUFFIX);
        expect_part(
            ckpt,
            (&path, name),
            &tables,
            Dtype::F16,
            &part_shape(&info, &[rows, table_len]),
        )?;
        for (m, values) in
            info.matrices
                .iter_mut()
                .zip(read_codebooks(ckpt, &tables, experts, rows * table_len)?)
        {
            m.row_tables = values;
        }
        tables
    } else {
        expect_part(
            ckpt,
            (&path, name),
            &codebook,
            Dtype::F32,
            &part_shape(&info, &[table_len]),
        )?;
        for (m, values) in info
            .matrices
            .iter_mut()
            .zip(read_codebooks(ckpt, &codebook, experts, table_len)?)
        {
            m.codebook = values;
        }
        codebook
    };
    if table_len < 16 {
        let stored = ckpt.entry(&codes)?.1;
        check_codes(stored, info.cols(), table_len).map_err(bad)?;
    }
    Ok(QuantSlot {
        info,
        codes: codes.clone(),
        scales: scales.clone(),
        parts: vec![codes, scales, codebook],
        nested: None,
        e4m3: None,
    })
}

/// Codes of a table shorter than 16 entries must index it: a nibble can hold more, and the
/// kernels would read the zero padding of their 16-entry table (silently wrong weights).
fn check_codes(codes: &[u8], cols: usize, table_len: usize) -> Result<(), String> {
    let rb = row_bytes(cols);
    for (r, row) in codes.chunks(rb).enumerate() {
        if let Some(c) = (0..cols).find(|&c| code_at(row, c) as usize >= table_len) {
            return Err(format!(
                "code {} at element {} is outside its {table_len}-entry codebook",
                code_at(row, c),
                r * cols + c
            ));
        }
    }
    Ok(())
}

fn bnb_slot(ckpt: &ShardSet, base: &str, state_name: &str) -> Result<QuantSlot, ConvertError> {
    let path = path_of(ckpt, state_name);
    let bad = |reason: String| ConvertError::tensor(&path, base, reason);
    let state = ckpt.entry(state_name)?.1;
    let state: Value = serde_json::from_slice(state)
        .map_err(|e| bad(format!("bitsandbytes quant_state is not JSON: {e}")))?;
    let quant_type = state["quant_type"].as_str().unwrap_or("");
    let block = state["blocksize"]
        .as_u64()
        .and_then(|b| usize::try_from(b).ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| bad("quant_state has no valid blocksize".into()))?;
    let shape: Vec<usize> = state["shape"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        })
        .ok_or_else(|| {
            bad(format!(
                "quant_state shape {} is not a list of non-negative integers",
                state["shape"]
            ))
        })?;
    check_shape(&shape).map_err(bad)?;
    let dtype = state["dtype"]
        .as_str()
        .and_then(from_torch_name)
        .ok_or_else(|| {
            bad(format!(
                "quant_state dtype {} is not a float dtype",
                state["dtype"]
            ))
        })?;
    let numel: usize = shape.iter().product();
    let blocks = numel.div_ceil(block);
    let absmax = format!("{base}.absmax");
    let quant_map = format!("{base}.quant_map");
    expect_part(
        ckpt,
        (&path, base),
        base,
        Dtype::U8,
        &[numel.div_ceil(2), 1],
    )?;
    let mut parts = vec![base.to_string(), absmax.clone(), quant_map.clone()];
    let nested = match state.get("nested_blocksize") {
        None => {
            expect_part(ckpt, (&path, base), &absmax, Dtype::F32, &[blocks])?;
            None
        }
        Some(nb) => {
            let nested = nested_absmax(ckpt, (&path, base), &state, nb, blocks)?;
            parts.extend([
                format!("{base}.nested_absmax"),
                format!("{base}.nested_quant_map"),
            ]);
            Some(nested)
        }
    };
    parts.push(state_name.to_string());
    expect_part(ckpt, (&path, base), &quant_map, Dtype::F32, &[16])?;
    let codebook = read_codebooks(ckpt, &quant_map, 1, 16)?.remove(0);
    let info = QuantInfo {
        version: FORMAT_VERSION,
        layout: Layout::Bnb,
        format: quant_type.to_string(),
        bits: 4,
        shape,
        dtype: dtype_name(dtype),
        block,
        scale_dtype: ScaleDtype::F32,
        scale_rule: None,
        calibration: None,
        nested_absmax_block: nested.as_ref().map(|n| n.block),
        e4m3_stored: false,
        matrices: vec![MatrixInfo {
            format: format!("bnb_{quant_type}"),
            nu: None,
            fit: None,
            fit_tensor: None,
            codebook,
            row_tables: Vec::new(),
            global_scale: None,
        }],
    };
    Ok(QuantSlot {
        info,
        codes: base.to_string(),
        scales: absmax,
        parts,
        nested,
        e4m3: None,
    })
}

/// bitsandbytes double quantization (`nested_*` in the quant_state): `W.absmax` is u8 codes of
/// the `blocks` absmax, `W.nested_quant_map` their 256-entry f32 table, `W.nested_absmax` one
/// f32 per `nested_blocksize` codes, and `nested_offset` the mean added back.
fn nested_absmax(
    ckpt: &ShardSet,
    owner: (&Path, &str),
    state: &Value,
    nested_blocksize: &Value,
    blocks: usize,
) -> Result<NestedAbsmax, ConvertError> {
    let (path, base) = owner;
    let bad = |reason: String| ConvertError::tensor(path, base, reason);
    let block = nested_blocksize
        .as_u64()
        .and_then(|b| usize::try_from(b).ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            bad(format!(
                "nested_blocksize {nested_blocksize} is not a positive integer"
            ))
        })?;
    let offset = state["nested_offset"]
        .as_f64()
        .map(|o| o as f32)
        .filter(|o| o.is_finite())
        .ok_or_else(|| {
            bad(format!(
                "nested_offset {} is not a finite number",
                state["nested_offset"]
            ))
        })?;
    if let Some(d) = state.get("nested_dtype") {
        if d != "float32" {
            return Err(bad(format!("nested_dtype {d} is not float32")));
        }
    }
    let codes = format!("{base}.absmax");
    let absmax = format!("{base}.nested_absmax");
    let map = format!("{base}.nested_quant_map");
    expect_part(ckpt, owner, &codes, Dtype::U8, &[blocks])?;
    expect_part(ckpt, owner, &absmax, Dtype::F32, &[blocks.div_ceil(block)])?;
    expect_part(ckpt, owner, &map, Dtype::F32, &[256])?;
    let finite = |name: &str| -> Result<Vec<f32>, ConvertError> {
        let v = ckpt.read_f32(name)?;
        match v.iter().find(|x| !x.is_finite()) {
            Some(x) => Err(ConvertError::tensor(
                path_of(ckpt, name),
                name,
                format!("value {x} is not finite"),
            )),
            None => Ok(v),
        }
    };
    Ok(NestedAbsmax {
        map: finite(&map)?,
        absmax: finite(&absmax)?,
        block,
        offset,
        decoded: OnceLock::new(),
    })
}

/// The model's dtype from config.json (`dtype`, or the older `torch_dtype`): MXFP4 tensors do
/// not record the dtype they were made from.
fn config_dtype(ckpt: &ShardSet) -> String {
    let cfg = ckpt.config();
    let name = cfg
        .and_then(|c| c.get("dtype").or_else(|| c.get("torch_dtype")))
        .and_then(Value::as_str)
        .and_then(from_torch_name);
    name.map(dtype_name).unwrap_or_else(|| "unknown".into())
}

fn mxfp4_slot(
    ckpt: &ShardSet,
    base: &str,
    blocks: &str,
    scales: &str,
) -> Result<QuantSlot, ConvertError> {
    let path = path_of(ckpt, blocks);
    let bad = |reason: String| ConvertError::tensor(&path, base, reason);
    let (b, _) = ckpt.entry(blocks)?;
    let n = b.shape.len();
    if b.dtype != Dtype::U8 || !(3..=4).contains(&n) || b.shape[n - 1] != MXFP4_BLOCK / 2 {
        return Err(bad(format!(
            "MXFP4 blocks must be U8 [.., rows, groups, 16], found {} {:?}",
            b.dtype, b.shape
        )));
    }
    let mut shape = b.shape[..n - 1].to_vec();
    shape[n - 2] = shape[n - 2]
        .checked_mul(MXFP4_BLOCK)
        .ok_or_else(|| bad(format!("MXFP4 blocks {:?} overflow", b.shape)))?;
    check_shape(&shape).map_err(bad)?;
    expect_part(ckpt, (&path, base), scales, Dtype::U8, &b.shape[..n - 1])?;
    let e2m1: Format = "e2m1".parse().expect("e2m1 is in the catalog");
    let experts = if shape.len() == 3 { shape[0] } else { 1 };
    let info = QuantInfo {
        version: FORMAT_VERSION,
        layout: Layout::Mxfp4,
        format: "mxfp4".into(),
        bits: 4,
        shape,
        dtype: config_dtype(ckpt),
        block: MXFP4_BLOCK,
        scale_dtype: ScaleDtype::E8m0,
        scale_rule: None,
        calibration: None,
        nested_absmax_block: None,
        e4m3_stored: false,
        matrices: vec![
            MatrixInfo {
                format: "e2m1".into(),
                nu: None,
                fit: None,
                fit_tensor: None,
                codebook: e2m1.codebook().values().to_vec(),
                row_tables: Vec::new(),
                global_scale: None,
            };
            experts
        ],
    };
    Ok(QuantSlot {
        info,
        codes: blocks.to_string(),
        scales: scales.to_string(),
        parts: vec![blocks.to_string(), scales.to_string()],
        nested: None,
        e4m3: None,
    })
}

/// The compressed-tensors format config.json names (`quantization_config.format`, or the one
/// format of its config groups), when it is a compressed-tensors checkpoint.
fn ct_config_format(ckpt: &ShardSet) -> Option<String> {
    let q = ckpt.config()?.get("quantization_config")?;
    if q.get("quant_method").and_then(Value::as_str) != Some("compressed-tensors") {
        return None;
    }
    q.get("format").and_then(Value::as_str).map(str::to_string)
}

/// A compressed-tensors weight `base` (`X.weight`), from `base_packed`, `base_scale` and, for
/// NVFP4, `base_global_scale` (F32 `[1]`, or `[]` as some exporters write it).
fn ct_slot(ckpt: &ShardSet, base: &str, packed: &str) -> Result<QuantSlot, ConvertError> {
    use crate::schema::CtFormat;
    use tquant_formats::nvfp4::NVFP4_BLOCK;
    if ct_config_format(ckpt).as_deref() == Some(ct_int4::PACK_QUANTIZED) {
        return ct_int4::ct_int4_slot(ckpt, base, packed);
    }
    let path = path_of(ckpt, packed);
    let bad = |reason: String| ConvertError::tensor(&path, base, reason);
    let (p, _) = ckpt.entry(packed)?;
    if p.dtype != Dtype::U8 || p.shape.len() != 2 {
        return Err(bad(format!(
            "compressed-tensors weight_packed must be U8 [rows, cols/2], found {} {:?}",
            p.dtype, p.shape
        )));
    }
    let (rows, cols) = (p.shape[0], p.shape[1].saturating_mul(2));
    check_shape(&[rows, cols]).map_err(bad)?;
    let scales = format!("{base}_scale");
    let Some((_, s)) = ckpt.locate(&scales) else {
        return Err(ConvertError::MissingPart {
            path: path.clone(),
            tensor: base.to_string(),
            part: scales,
        });
    };
    let format = match (ct_config_format(ckpt), s.dtype) {
        (Some(f), _) if CtFormat::from_name(&f).is_none() => {
            return Err(bad(format!(
                "compressed-tensors format '{f}' is not read (nvfp4-pack-quantized, \
                 mxfp4-pack-quantized, pack-quantized)"
            )))
        }
        (Some(f), _) => CtFormat::from_name(&f).expect("checked above"),
        (None, Dtype::F8_E4M3) => CtFormat::Nvfp4,
        (None, _) => CtFormat::Mxfp4,
    };
    let block = format.block().unwrap_or(MXFP4_BLOCK);
    if cols % block != 0 {
        return Err(bad(format!(
            "{} needs rows of whole blocks of {block}; weight_packed {:?} holds rows of {cols}",
            format.name(),
            p.shape
        )));
    }
    let (scale_dtype, stored_dtype) = match format {
        CtFormat::Nvfp4 => (ScaleDtype::F32, Dtype::F8_E4M3),
        CtFormat::Mxfp4 | CtFormat::Int4 => (ScaleDtype::E8m0, Dtype::U8),
    };
    expect_part(
        ckpt,
        (&path, base),
        &scales,
        stored_dtype,
        &[rows, cols / block],
    )?;
    let mut parts = vec![packed.to_string(), scales.clone()];
    let mut e4m3 = None;
    let mut global_scale = None;
    if format == CtFormat::Nvfp4 {
        debug_assert_eq!(block, NVFP4_BLOCK);
        let global = format!("{base}_global_scale");
        if ckpt.locate(&global).is_none() {
            return Err(ConvertError::MissingPart {
                path: path.clone(),
                tensor: base.to_string(),
                part: global,
            });
        }
        let v = nvfp4_tensor_scale(ckpt, &global)?;
        global_scale = Some(v);
        e4m3 = Some(E4m3Scales {
            tensor_scale: v,
            multiply: false,
            decoded: OnceLock::new(),
        });
        parts.push(global);
    }
    let e2m1: Format = "e2m1".parse().expect("e2m1 is in the catalog");
    let info = QuantInfo {
        version: FORMAT_VERSION,
        layout: Layout::CompressedTensors,
        format: match format {
            CtFormat::Nvfp4 => "nvfp4".into(),
            CtFormat::Mxfp4 | CtFormat::Int4 => "mxfp4".into(),
        },
        bits: 4,
        shape: vec![rows, cols],
        dtype: config_dtype(ckpt),
        block,
        scale_dtype,
        scale_rule: None,
        calibration: None,
        nested_absmax_block: None,
        e4m3_stored: e4m3.is_some(),
        matrices: vec![MatrixInfo {
            format: "e2m1".into(),
            nu: None,
            fit: None,
            fit_tensor: None,
            codebook: e2m1.codebook().values().to_vec(),
            row_tables: Vec::new(),
            global_scale,
        }],
    };
    Ok(QuantSlot {
        info,
        codes: packed.to_string(),
        scales,
        parts,
        nested: None,
        e4m3,
    })
}

/// Reads an NVFP4 tensor scale (F32 `[1]` or `[]`), which must be finite and positive.
fn nvfp4_tensor_scale(ckpt: &ShardSet, name: &str) -> Result<f32, ConvertError> {
    let (shard, g) = ckpt.locate(name).expect("the caller found it");
    if g.dtype != Dtype::F32 || !(g.shape.is_empty() || g.shape == [1]) {
        return Err(ConvertError::PartMismatch {
            path: shard.path.clone(),
            part: name.to_string(),
            expected: (Dtype::F32, vec![1]),
            found: (g.dtype, g.shape.clone()),
        });
    }
    let v = ckpt.read_f32(name)?[0];
    if !(v.is_finite() && v > 0.0) {
        return Err(ConvertError::tensor(
            path_of(ckpt, name),
            name,
            format!("NVFP4 tensor scale {v} is not a finite positive number"),
        ));
    }
    Ok(v)
}

/// A ModelOpt NVFP4 weight `base` (`X.weight` U8 `[rows, cols/2]`), with `X.weight_scale`
/// F8_E4M3 `[rows, cols/16]` and the multiplier `X.weight_scale_2`.
fn modelopt_slot(ckpt: &ShardSet, base: &str, scale_2: &str) -> Result<QuantSlot, ConvertError> {
    use tquant_formats::nvfp4::NVFP4_BLOCK;
    let path = path_of(ckpt, scale_2);
    let bad = |reason: String| ConvertError::tensor(&path, base, reason);
    let Some((_, p)) = ckpt.locate(base) else {
        return Err(ConvertError::MissingPart {
            path: path.clone(),
            tensor: base.to_string(),
            part: base.to_string(),
        });
    };
    if p.dtype != Dtype::U8 || p.shape.len() != 2 {
        return Err(bad(format!(
            "a ModelOpt NVFP4 weight must be U8 [rows, cols/2], found {} {:?}",
            p.dtype, p.shape
        )));
    }
    let (rows, cols) = (p.shape[0], p.shape[1].saturating_mul(2));
    check_shape(&[rows, cols]).map_err(bad)?;
    if cols % NVFP4_BLOCK != 0 {
        return Err(bad(format!(
            "NVFP4 needs rows of whole blocks of {NVFP4_BLOCK}; the weight holds rows of {cols}"
        )));
    }
    let scales = format!("{base}_scale");
    expect_part(
        ckpt,
        (&path, base),
        &scales,
        Dtype::F8_E4M3,
        &[rows, cols / NVFP4_BLOCK],
    )?;
    let v = nvfp4_tensor_scale(ckpt, scale_2)?;
    let info = QuantInfo {
        version: FORMAT_VERSION,
        layout: Layout::ModelOpt,
        format: "nvfp4".into(),
        bits: 4,
        shape: vec![rows, cols],
        dtype: config_dtype(ckpt),
        block: NVFP4_BLOCK,
        scale_dtype: ScaleDtype::F32,
        scale_rule: None,
        calibration: None,
        nested_absmax_block: None,
        e4m3_stored: true,
        matrices: vec![MatrixInfo {
            format: "e2m1".into(),
            nu: None,
            fit: None,
            fit_tensor: None,
            // ModelOpt decodes code 8 as +0.
            codebook: tquant_formats::nvfp4::modelopt_e2m1().to_vec(),
            row_tables: Vec::new(),
            global_scale: Some(v),
        }],
    };
    Ok(QuantSlot {
        info,
        codes: base.to_string(),
        scales: scales.clone(),
        parts: vec![base.to_string(), scales, scale_2.to_string()],
        nested: None,
        e4m3: Some(E4m3Scales {
            tensor_scale: v,
            multiply: true,
            decoded: OnceLock::new(),
        }),
    })
}
