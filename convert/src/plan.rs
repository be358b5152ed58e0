//! The conversion plan, from headers alone: the policy's decision for every tensor, the stored
//! parts of each quantized one, their offsets in each output shard, and the room each header
//! needs for the fit results that only exist after quantization. Also the side files (index,
//! config.json with its `quantization_config`, tokenizer files).

use crate::checkpoint::{Checkpoint, CONFIG_FILE, INDEX_FILE};
use crate::error::ConvertError;
use crate::fp8::is_fp8;
use crate::header::{dtype_bytes, serialize_header, OutEntry};
use crate::layouts;
use crate::options::{ConvertOptions, NuChoice};
use crate::policy::{glob_match, is_head, Action, KeepAs};
use crate::quantize::plan_info;
use crate::schema::{
    scale_storage_dtype, FitInfo, Layout, MatrixInfo, QuantInfo, CODEBOOK_SUFFIX, CODES_SUFFIX,
    FORMAT_VERSION, META_PREFIX, META_VERSION, SCALES_SUFFIX,
};
use crate::writer::StagingDir;
use safetensors::Dtype;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One tensor of the input and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    /// The tensor name.
    pub name: String,
    /// What the policy decided (`quantize`, `keep`, `skip`, `drop`).
    pub action: String,
    /// The input dtype.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The base format of a quantized tensor.
    pub format: Option<String>,
    /// The format of each matrix (one per expert): what `--format auto` chose.
    pub formats: Vec<String>,
    /// nu of each matrix's codebook (one per expert), when Student Float.
    pub nu: Vec<Option<f64>>,
    /// Whole-tensor fits, one per matrix (the paper's per-tensor profile).
    pub nu_tensor: Vec<Option<f64>>,
    /// Stored bits per weight (0 when not written).
    pub bits_per_weight: f64,
    /// The dtype written when it is not the input's: `BF16` for a kept FP8 weight, written
    /// dequantized since its block scales are not.
    pub stored_dtype: Option<String>,
}

/// Files beside the weights that are copied to the output unchanged.
const AUX_FILES: [&str; 8] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];
/// Input bytes a q8_0 write job reads at most (whole rows; at least one).
const Q8_CHUNK_BYTES: usize = 64 << 20;
/// Worst-case float (longest JSON spelling) used to reserve header room for fit results.
const WIDEST_F64: f64 = -1.234_567_890_123_456_7e-300;
/// `__metadata__` key recording how a compressed-tensors file was rounded (`rtn`).
pub(crate) const ROUNDING_KEY: &str = "quantization_rounding";
/// The widest f32 (a tensor scale), as [`WIDEST_F64`].
const WIDEST_F32: f32 = -1.234_567_9e-38;
/// One output tensor: its header entry and where its bytes come from.
#[derive(Debug)]
pub(crate) struct OutTensor {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) len: u64,
    pub(crate) begin: u64,
    /// Bytes known at plan time (bnb quant_map and quant_state).
    pub(crate) fixed: Option<Vec<u8>>,
    /// Input shard and absolute offset of a kept tensor.
    pub(crate) copy_from: Option<(usize, u64)>,
    /// A kept FP8 weight, written dequantized as BF16 (its block scales are not written).
    pub(crate) dequantize: bool,
}

#[derive(Debug)]
pub(crate) struct OutShard {
    pub(crate) file_name: String,
    pub(crate) tensors: Vec<OutTensor>,
    pub(crate) base_metadata: BTreeMap<String, String>,
    pub(crate) header_len: u64,
}

impl OutShard {
    pub(crate) fn data_start(&self) -> u64 {
        8 + self.header_len
    }
    pub(crate) fn data_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }
    /// Absolute file offset of a planned tensor.
    fn abs(&self, name: &str) -> u64 {
        let t = self.tensors.iter().find(|t| t.name == name);
        self.data_start() + t.expect("a planned part").begin
    }
}

/// A tensor to quantize.
#[derive(Debug)]
pub(crate) struct QuantPlan {
    pub(crate) name: String,
    pub(crate) in_shard: usize,
    pub(crate) in_offset: u64,
    pub(crate) dtype: Dtype,
    pub(crate) info: QuantInfo,
    pub(crate) out_shard: usize,
    pub(crate) codes_part: String,
    pub(crate) scales_part: String,
    pub(crate) codebook_part: Option<String>,
    /// Absolute offsets of the parts in the output shard, set once the layout is final.
    pub(crate) codes_at: u64,
    pub(crate) scales_at: u64,
    pub(crate) codebook_at: Option<u64>,
    /// Index of its first matrix in the results table.
    pub(crate) first_result: usize,
    /// Index of its entry in the summaries.
    pub(crate) summary: usize,
}

impl QuantPlan {
    /// Matrix jobs, each with its result (fit, codebook): one per matrix, except bitsandbytes'
    /// flattened layout (one per tensor) and q8_0 (none: its description is final at plan
    /// time, and its rows are written in chunks, [`QuantPlan::q8_chunks`]).
    pub(crate) fn jobs(&self) -> usize {
        if self.info.is_q8_0() {
            0
        } else if self.info.layout == Layout::Bnb {
            1
        } else {
            self.info.experts()
        }
    }

    /// A q8_0 tensor's rows per write job: about [`Q8_CHUNK_BYTES`] of input, so a large
    /// embedding is never read whole (an FP8 one is, once: its block scales span rows).
    pub(crate) fn q8_rows_per_chunk(&self) -> usize {
        let rows = self.info.experts() * self.info.rows();
        if is_fp8(self.dtype) {
            return rows;
        }
        let row_bytes = self.info.cols() * dtype_bytes(self.dtype).unwrap_or(4);
        (Q8_CHUNK_BYTES / row_bytes.max(1)).clamp(1, rows.max(1))
    }

    /// Write jobs of a q8_0 tensor.
    pub(crate) fn q8_chunks(&self) -> usize {
        (self.info.experts() * self.info.rows()).div_ceil(self.q8_rows_per_chunk())
    }
}

pub(crate) fn plan_format_name(opts: &ConvertOptions) -> String {
    if let Some(spec) = &opts.auto {
        return spec.name();
    }
    if opts.learned && opts.row_tables {
        return crate::schema::LEARNED_ROW.to_string();
    }
    if opts.learned {
        return crate::schema::LEARNED.to_string();
    }
    match opts.nu {
        Some(NuChoice::Fit | NuChoice::Search) => format!("sf{}", opts.bits()),
        _ => opts.format.name().to_string(),
    }
}

pub(crate) fn nu_json(opts: &ConvertOptions) -> Value {
    match opts.nu {
        Some(NuChoice::Fit) => json!("fit"),
        Some(NuChoice::Search) => json!("search"),
        Some(NuChoice::Fixed(v)) => json!(v),
        None => Value::Null,
    }
}

pub(crate) fn entries(s: &OutShard) -> Vec<OutEntry> {
    s.tensors
        .iter()
        .map(|t| OutEntry {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            begin: t.begin,
            end: t.begin + t.len,
        })
        .collect()
}

pub(crate) type Plan = (Vec<OutShard>, Vec<QuantPlan>, Vec<TensorSummary>);

/// Every drop glob must name some tensor: a typo would otherwise keep what was meant to go.
fn check_drop_globs(ckpt: &Checkpoint, opts: &ConvertOptions) -> Result<(), ConvertError> {
    for glob in &opts.policy.drop {
        if !ckpt.names().any(|n| glob_match(glob, n)) {
            return Err(ConvertError::DropUnmatched {
                glob: glob.clone(),
                checkpoint: ckpt.root().to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Decides every tensor and lays out every output shard, from the headers alone.
pub(crate) fn plan(ckpt: &Checkpoint, opts: &ConvertOptions) -> Result<Plan, ConvertError> {
    let mut shards = Vec::new();
    let mut plans = Vec::new();
    let mut summaries = Vec::new();
    let mut n_results = 0;
    check_drop_globs(ckpt, opts)?;
    let keep_as = match opts.keep_as() {
        // Tied embeddings are the head too.
        KeepAs::HeadQ8_0 if !ckpt.names().any(is_head) => KeepAs::Q8_0,
        keep => keep,
    };
    for (si, shard) in ckpt.shards().iter().enumerate() {
        let mut out = OutShard {
            file_name: shard.file_name(),
            tensors: Vec::new(),
            base_metadata: shard.header.metadata.clone(),
            header_len: 0,
        };
        for entry in &shard.header.entries {
            if ckpt.is_fp8_scale(&entry.name) {
                // Read with its weight; never written (the weight is requantized or dequantized).
                continue;
            }
            let fp8 = is_fp8(entry.dtype);
            let action =
                opts.policy
                    .decide_keeping(&entry.name, &entry.shape, entry.dtype, keep_as);
            let mut summary = TensorSummary {
                name: entry.name.clone(),
                action: action.name().into(),
                dtype: entry.dtype.to_string(),
                shape: entry.shape.clone(),
                format: None,
                formats: Vec::new(),
                nu: Vec::new(),
                nu_tensor: Vec::new(),
                bits_per_weight: entry.dtype.bitsize() as f64,
                stored_dtype: None,
            };
            match action {
                Action::Skip | Action::Drop => summary.bits_per_weight = 0.0,
                Action::Keep if fp8 => {
                    summary.stored_dtype = Some(Dtype::BF16.to_string());
                    summary.bits_per_weight = 16.0;
                    out.tensors.push(OutTensor {
                        name: entry.name.clone(),
                        dtype: Dtype::BF16,
                        shape: entry.shape.clone(),
                        len: entry.numel() as u64 * 2,
                        begin: 0,
                        fixed: None,
                        copy_from: None,
                        dequantize: true,
                    });
                }
                Action::Keep => out.tensors.push(OutTensor {
                    name: entry.name.clone(),
                    dtype: entry.dtype,
                    shape: entry.shape.clone(),
                    len: entry.len as u64,
                    begin: 0,
                    fixed: None,
                    copy_from: Some((si, entry.offset)),
                    dequantize: false,
                }),
                Action::Q8 => {
                    // Counted with the quantized tensors; its format says q8_0.
                    summary.action = Action::Quantize.name().into();
                    let info = QuantInfo::q8_0(&entry.shape, entry.dtype);
                    summary.bits_per_weight = info.bits_per_weight();
                    let mut plan = add_parts(
                        &mut out,
                        si,
                        entry.name.clone(),
                        entry.offset,
                        entry.dtype,
                        info,
                        shards.len(),
                        n_results,
                    );
                    plan.summary = summaries.len();
                    plans.push(plan);
                }
                Action::Quantize => {
                    let mut info = plan_info(&entry.shape, entry.dtype, opts);
                    crate::calibration::annotate(&mut info, &entry.name, opts);
                    layouts::check_matrix(opts, (Some(&shard.path), &entry.name), info.cols())?;
                    if matches!(opts.layout, Layout::CompressedTensors | Layout::ModelOpt) {
                        crate::compressed_tensors::check_tensor(
                            opts,
                            (Some(&shard.path), &entry.name),
                            &entry.shape,
                        )?;
                    }
                    summary.bits_per_weight = info.bits_per_weight();
                    let mut plan = add_parts(
                        &mut out,
                        si,
                        entry.name.clone(),
                        entry.offset,
                        entry.dtype,
                        info,
                        shards.len(),
                        n_results,
                    );
                    plan.summary = summaries.len();
                    n_results += plan.jobs();
                    plans.push(plan);
                }
            }
            summaries.push(summary);
        }
        // Widest dtypes first, so every tensor starts aligned to its element size.
        out.tensors
            .sort_by_key(|t| std::cmp::Reverse(dtype_bytes(t.dtype).unwrap_or(1)));
        let mut pos = 0;
        for t in &mut out.tensors {
            t.begin = pos;
            pos += t.len;
        }
        shards.push(out);
    }
    // A stored part must not collide with another tensor (an input that already has `X.codes`).
    let mut seen = std::collections::HashSet::new();
    for (si, shard) in shards.iter().enumerate() {
        for t in &shard.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(ConvertError::tensor(
                    &ckpt.shards()[si].path,
                    &t.name,
                    "the output would hold two tensors of this name (a quantized part collides with an input tensor); exclude one of them",
                ));
            }
        }
    }
    // Header room: the placeholders are as wide as any fit result.
    for (si, shard) in shards.iter_mut().enumerate() {
        let placeholder = shard_metadata(si, shard, &plans, None, opts);
        shard.header_len = serialize_header(&entries(shard), &placeholder, 0).len() as u64;
    }
    for p in plans.iter_mut() {
        let s = &shards[p.out_shard];
        p.codes_at = s.abs(&p.codes_part);
        p.scales_at = s.abs(&p.scales_part);
        p.codebook_at = p.codebook_part.as_deref().map(|c| s.abs(c));
    }
    Ok((shards, plans, summaries))
}

#[allow(clippy::too_many_arguments)]
fn add_parts(
    out: &mut OutShard,
    in_shard: usize,
    name: String,
    in_offset: u64,
    dtype: Dtype,
    info: QuantInfo,
    out_shard: usize,
    first_result: usize,
) -> QuantPlan {
    let mut push = |name: String, dtype: Dtype, shape: Vec<usize>, fixed: Option<Vec<u8>>| {
        let len = shape.iter().product::<usize>() * dtype_bytes(dtype).unwrap_or(1);
        out.tensors.push(OutTensor {
            name: name.clone(),
            dtype,
            shape,
            len: len as u64,
            begin: 0,
            fixed,
            copy_from: None,
            dequantize: false,
        });
        name
    };
    let lead: Vec<usize> = if info.shape.len() == 3 {
        vec![info.shape[0]]
    } else {
        vec![]
    };
    let with = |tail: &[usize]| [lead.as_slice(), tail].concat();
    let (rows, cols) = (info.rows(), info.cols());
    let (codes_part, scales_part, codebook_part) = match info.layout {
        Layout::Tquant if info.is_q8_0() => {
            let c = push(
                format!("{name}{CODES_SUFFIX}"),
                Dtype::I8,
                with(&[rows, cols]),
                None,
            );
            let s = push(
                format!("{name}{SCALES_SUFFIX}"),
                Dtype::F16,
                with(&[rows, info.blocks_per_row()]),
                None,
            );
            (c, s, None)
        }
        // Options with the gguf layout are refused before planning (`validate`).
        Layout::Tquant | Layout::Gguf => {
            let c = push(
                format!("{name}{CODES_SUFFIX}"),
                Dtype::U8,
                with(&[rows, cols.div_ceil(2)]),
                None,
            );
            let s = push(
                format!("{name}{SCALES_SUFFIX}"),
                scale_storage_dtype(info.scale_dtype),
                with(&[rows, info.blocks_per_row()]),
                None,
            );
            // The third part: the matrix's table, or with `learned_row` a table per row.
            let b = if info.format == crate::schema::LEARNED_ROW {
                push(
                    format!("{name}{}", crate::schema::ROW_TABLES_SUFFIX),
                    Dtype::F16,
                    with(&[rows, 1 << info.bits]),
                    None,
                )
            } else {
                push(
                    format!("{name}{CODEBOOK_SUFFIX}"),
                    Dtype::F32,
                    with(&[1 << info.bits]),
                    None,
                )
            };
            (c, s, Some(b))
        }
        Layout::Mxfp4 => {
            let g = cols / crate::layouts::MXFP4_BLOCK;
            let c = push(
                format!("{name}_blocks"),
                Dtype::U8,
                with(&[rows, g, 16]),
                None,
            );
            let s = push(format!("{name}_scales"), Dtype::U8, with(&[rows, g]), None);
            (c, s, None)
        }
        Layout::CompressedTensors if info.format == "int4_full" => {
            use crate::compressed_tensors::{PACKED_SUFFIX, SCALE_SUFFIX};
            // pack-quantized: 8 codes per little-endian I32, the unpacked shape beside them.
            let c = push(
                format!("{name}{PACKED_SUFFIX}"),
                Dtype::I32,
                vec![rows, cols / 8],
                None,
            );
            let s = push(
                format!("{name}{SCALE_SUFFIX}"),
                scale_storage_dtype(info.scale_dtype),
                vec![rows, info.blocks_per_row()],
                None,
            );
            let dims = [rows as i64, cols as i64].map(i64::to_le_bytes).concat();
            push(format!("{name}_shape"), Dtype::I64, vec![2], Some(dims));
            (c, s, None)
        }
        Layout::CompressedTensors => {
            use crate::compressed_tensors::{GLOBAL_SCALE_SUFFIX, PACKED_SUFFIX, SCALE_SUFFIX};
            let c = push(
                format!("{name}{PACKED_SUFFIX}"),
                Dtype::U8,
                vec![rows, cols / 2],
                None,
            );
            let s = push(
                format!("{name}{SCALE_SUFFIX}"),
                scale_storage_dtype(info.scale_dtype),
                vec![rows, info.blocks_per_row()],
                None,
            );
            let g = (info.scale_dtype == tquant_formats::ScaleDtype::E4m3).then(|| {
                push(
                    format!("{name}{GLOBAL_SCALE_SUFFIX}"),
                    Dtype::F32,
                    vec![1],
                    None,
                )
            });
            (c, s, g)
        }
        Layout::ModelOpt => {
            let c = push(name.clone(), Dtype::U8, vec![rows, cols / 2], None);
            let s = push(
                format!("{name}_scale"),
                Dtype::F8_E4M3,
                vec![rows, info.blocks_per_row()],
                None,
            );
            let g = push(format!("{name}_scale_2"), Dtype::F32, vec![], None);
            (c, s, Some(g))
        }
        Layout::Bnb => {
            let n = info.numel();
            let c = push(name.clone(), Dtype::U8, vec![n.div_ceil(2), 1], None);
            let s = push(
                format!("{name}.absmax"),
                Dtype::F32,
                vec![n.div_ceil(info.block)],
                None,
            );
            let map: Vec<u8> = info.matrices[0]
                .codebook
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            push(format!("{name}.quant_map"), Dtype::F32, vec![16], Some(map));
            let state = layouts::bnb_quant_state(&info);
            push(
                format!("{name}.quant_state.bitsandbytes__nf4"),
                Dtype::U8,
                vec![state.len()],
                Some(state),
            );
            (c, s, None)
        }
    };
    QuantPlan {
        name,
        in_shard,
        in_offset,
        dtype,
        info,
        out_shard,
        codes_part,
        scales_part,
        codebook_part,
        codes_at: 0,
        scales_at: 0,
        codebook_at: None,
        first_result,
        summary: 0,
    }
}

/// A shard's `__metadata__`: the input's, plus tquant's version and one description per
/// quantized tensor (tquant layout). Without results, placeholders as wide as any fit.
pub(crate) fn shard_metadata(
    si: usize,
    shard: &OutShard,
    plans: &[QuantPlan],
    results: Option<&[MatrixInfo]>,
    opts: &ConvertOptions,
) -> BTreeMap<String, String> {
    let mut meta = shard.base_metadata.clone();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    if matches!(opts.layout, Layout::CompressedTensors | Layout::ModelOpt) {
        // Neither config has a field for it: round to nearest with min-max scales is the
        // only way this layout is written (no scale search, no GPTQ).
        meta.insert(ROUNDING_KEY.into(), "rtn".into());
    }
    if opts.layout != Layout::Tquant {
        return meta;
    }
    meta.insert(META_VERSION.into(), FORMAT_VERSION.to_string());
    let widest = FitInfo {
        nu: WIDEST_F64,
        loc: WIDEST_F64,
        scale: WIDEST_F64,
    };
    for p in plans.iter().filter(|p| p.out_shard == si) {
        if p.info.is_q8_0() {
            // Final at plan time: nothing is fitted.
            meta.insert(format!("{META_PREFIX}{}", p.name), p.info.to_json());
            continue;
        }
        let mut info = p.info.clone();
        match results {
            Some(r) => info.matrices = r[p.first_result..p.first_result + p.jobs()].to_vec(),
            None => {
                for m in &mut info.matrices {
                    if opts.scale_dtype == tquant_formats::ScaleDtype::E4m3 {
                        m.global_scale = Some(WIDEST_F32);
                    }
                    if let Some(spec) = &opts.auto {
                        m.format = spec.widest_format_name();
                        m.nu = Some(WIDEST_F64);
                        m.fit = Some(widest);
                        m.fit_tensor = Some(widest);
                    } else if opts.learned && opts.row_tables {
                        // The tables are a part of their own; nothing here grows.
                        m.format = crate::schema::LEARNED_ROW.to_string();
                        m.nu = None;
                    } else if opts.learned {
                        // Each table is named `custom:v0,...`; an f32 in (-1, 1) prints as at
                        // most 48 characters (`-0.` and 45 digits, down to subnormals).
                        let widest = format!("-0.{}", "9".repeat(47));
                        m.format = format!("custom:{}", vec![widest; 1 << opts.bits()].join(","));
                    } else if matches!(opts.nu, Some(NuChoice::Fit | NuChoice::Search)) {
                        // nu is rounded to 3 decimals and at most NU_MAX = 1000.
                        m.format = format!("sf{}:nu=999.999", opts.bits());
                        m.nu = Some(WIDEST_F64);
                        m.fit = Some(widest);
                        m.fit_tensor = Some(widest);
                    }
                }
            }
        }
        meta.insert(format!("{META_PREFIX}{}", p.name), info.to_json());
    }
    meta
}

/// config.json with a `quantization_config` (replacing the input's, e.g. FP8's), the shard
/// index (with the names `--drop` left out), tokenizer files.
pub(crate) fn write_side_files(
    ckpt: &Checkpoint,
    staging: &StagingDir,
    shards: &[OutShard],
    dropped: &[&str],
    opts: &ConvertOptions,
) -> Result<(), ConvertError> {
    let root = ckpt.root();
    if root.join(INDEX_FILE).exists() {
        let mut weight_map = serde_json::Map::new();
        for s in shards {
            for t in &s.tensors {
                weight_map.insert(t.name.clone(), json!(s.file_name));
            }
        }
        let total: u64 = shards.iter().map(OutShard::data_len).sum();
        let mut metadata = json!({"total_size": total});
        if !dropped.is_empty() {
            metadata["dropped"] = json!(dropped);
        }
        let index = json!({"metadata": metadata, "weight_map": weight_map});
        staging.write_file(
            INDEX_FILE,
            &serde_json::to_vec_pretty(&index).expect("json"),
        )?;
    }
    let mut config = ckpt.config().cloned().unwrap_or_else(|| json!({}));
    if let Value::Object(map) = &mut config {
        map.insert(
            "quantization_config".into(),
            quantization_config(shards, opts),
        );
    }
    let text = serde_json::to_vec_pretty(&config).expect("json");
    staging.write_file(CONFIG_FILE, &text)?;
    if opts.layout == Layout::ModelOpt {
        let hf = crate::compressed_tensors::modelopt_hf_quant_config(&linear_kept(shards));
        staging.write_file(
            crate::compressed_tensors::HF_QUANT_CONFIG,
            &serde_json::to_vec_pretty(&hf).expect("json"),
        )?;
    }
    for aux in AUX_FILES {
        let from = root.join(aux);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(|e| ConvertError::io(&from, e))?;
            staging.write_file(aux, &bytes)?;
        }
    }
    Ok(())
}

fn quantization_config(shards: &[OutShard], opts: &ConvertOptions) -> Value {
    match opts.layout {
        // Refused before planning (`validate`).
        Layout::Gguf => Value::Null,
        Layout::Tquant => json!({
            "quant_method": "tquant",
            "version": FORMAT_VERSION,
            "layout": "tquant",
            "format": plan_format_name(opts),
            "bits": opts.bits(),
            "nu": nu_json(opts),
            "block": opts.block.to_string(),
            "scale_dtype": opts.scale_dtype.name(),
            "scale_rule": opts.scale_rule.name(),
            "include": opts.policy.include,
            "exclude": opts.policy.exclude,
            "drop": opts.policy.drop,
            "calibration": opts.calibration.as_deref().map(|c| c.summary()),
            "keep_as": opts.keep_as().name(),
        }),
        Layout::Bnb => layouts::bnb_config(),
        Layout::Mxfp4 => json!({
            "quant_method": "mxfp4",
            "modules_to_not_convert": kept_modules(shards),
        }),
        Layout::CompressedTensors => {
            // Embeddings are not Linear modules: compressed-tensors' targets never match them.
            crate::compressed_tensors::quantization_config(opts, linear_kept(shards))
        }
        Layout::ModelOpt => {
            crate::compressed_tensors::modelopt_quantization_config(&linear_kept(shards))
        }
    }
}

/// Kept modules that are Linear layers (embeddings are not): what compressed-tensors' `ignore`
/// and ModelOpt's `exclude_modules` list.
fn linear_kept(shards: &[OutShard]) -> Vec<String> {
    kept_modules(shards)
        .into_iter()
        .filter(|m| !m.to_ascii_lowercase().contains("embed"))
        .collect()
}

/// Modules whose `.weight` matrix was kept in full precision (what loaders must not replace).
fn kept_modules(shards: &[OutShard]) -> Vec<String> {
    shards
        .iter()
        .flat_map(|s| s.tensors.iter())
        .filter(|t| t.copy_from.is_some() && t.shape.len() == 2)
        .filter_map(|t| t.name.strip_suffix(".weight").map(str::to_string))
        .collect()
}
