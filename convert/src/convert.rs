//! `tquant convert`: a checkpoint in, a quantized checkpoint out, streamed.
//!
//! 1. Plan from the headers alone: the policy decides per tensor, the layout gives the stored
//!    parts and their sizes, so every output header (with room for the fit results) is known
//!    before any weight is read.
//! 2. Create each output shard at its final size; then, in parallel, every job maps its input
//!    range (one matrix, one expert, or one chunk of a kept tensor), quantizes it and writes the
//!    bytes at their offsets. Peak memory is a few matrices, whatever the model's size.
//! 3. Rewrite each header with the fitted parameters, write index and config, fsync, rename.

use crate::checkpoint::{Checkpoint, CONFIG_FILE, INDEX_FILE};
use crate::detect::scale_storage_dtype;
use crate::dtype::{count_non_finite, extend_f32};
use crate::header::{dtype_bytes, serialize_header, OutEntry};
use crate::layouts;
use crate::mmap::map_range;
use crate::policy::Action;
use crate::quantize::{plan_info, quantize_matrix, ConvertOptions, NuChoice};
use crate::quantized::{
    FitInfo, Layout, MatrixInfo, QuantInfo, CODEBOOK_SUFFIX, CODES_SUFFIX, FORMAT_VERSION,
    META_PREFIX, META_VERSION, SCALES_SUFFIX,
};
use crate::writer::{write_at, StagingDir};
use crate::ConvertError;
use rayon::prelude::*;
use safetensors::Dtype;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Kept tensors are copied in windows of this many bytes, so a huge embedding is never mapped
/// (and resident) whole.
const COPY_CHUNK: usize = 64 << 20;
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
/// Worst-case float (longest JSON spelling) used to reserve header room for fit results.
const WIDEST_F64: f64 = -1.234_567_890_123_456_7e-300;

/// Receives progress in bytes of input processed.
pub trait Progress: Sync {
    fn start(&self, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// How the conversion runs (not what it produces).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replace an existing output (atomically).
    pub force: bool,
    /// Worker threads; `None` uses every core.
    pub threads: Option<usize>,
}

/// One tensor of the input and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    pub name: String,
    pub action: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub format: Option<String>,
    /// nu of each matrix's codebook (one per expert), when Student Float.
    pub nu: Vec<Option<f64>>,
    /// Whole-tensor fits, one per matrix (the paper's per-tensor profile).
    pub nu_tensor: Vec<Option<f64>>,
    pub bits_per_weight: f64,
}

/// What a conversion did; `tquant convert --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertSummary {
    pub input: PathBuf,
    pub output: PathBuf,
    pub layout: String,
    pub format: String,
    pub nu: Value,
    pub block: String,
    pub scale_dtype: String,
    pub threads: usize,
    pub tensors: Vec<TensorSummary>,
    pub quantized: usize,
    pub kept: usize,
    pub skipped: usize,
    pub params: u64,
    pub params_quantized: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Output tensor bytes * 8 / parameters.
    pub bits_per_weight: f64,
    pub seconds: f64,
    /// Input megabytes (1e6) per second.
    pub mb_per_s: f64,
}

/// One output tensor: its header entry and where its bytes come from.
#[derive(Debug)]
struct OutTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    len: u64,
    begin: u64,
    /// Bytes known at plan time (bnb quant_map and quant_state).
    fixed: Option<Vec<u8>>,
    /// Input shard and absolute offset of a kept tensor.
    copy_from: Option<(usize, u64)>,
}

#[derive(Debug)]
struct OutShard {
    file_name: String,
    tensors: Vec<OutTensor>,
    base_metadata: BTreeMap<String, String>,
    header_len: u64,
}

impl OutShard {
    fn data_start(&self) -> u64 {
        8 + self.header_len
    }
    fn data_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }
    fn abs(&self, name: &str) -> u64 {
        let t = self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .expect("planned part");
        self.data_start() + t.begin
    }
}

/// A tensor to quantize.
#[derive(Debug)]
struct QuantPlan {
    name: String,
    in_shard: usize,
    in_offset: u64,
    dtype: Dtype,
    info: QuantInfo,
    out_shard: usize,
    codes_part: String,
    scales_part: String,
    codebook_part: Option<String>,
    /// Index of its first matrix in the results table.
    first_result: usize,
    /// Index of its entry in the summaries.
    summary: usize,
}

impl QuantPlan {
    /// Jobs: one per matrix, except bitsandbytes' flattened layout (one per tensor).
    fn jobs(&self) -> usize {
        if self.info.layout == Layout::Bnb {
            1
        } else {
            self.info.experts()
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Copy {
        tensor: (usize, usize),
        chunk: usize,
    },
    Matrix {
        plan: usize,
        expert: usize,
    },
}

/// Converts `input` (file or directory) into the directory `output`.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    run: &RunOptions,
    progress: &dyn Progress,
) -> Result<ConvertSummary, ConvertError> {
    let started = Instant::now();
    opts.validate()?;
    let ckpt = Checkpoint::open(input)?;
    if ckpt.is_quantized() {
        return Err(ConvertError::NotACheckpoint {
            path: input.to_path_buf(),
            reason: "it is already quantized".into(),
        });
    }
    refuse_overwriting_input(&ckpt, output)?;
    let (mut shards, plans, mut summaries) = plan(&ckpt, opts)?;
    for (si, shard) in shards.iter_mut().enumerate() {
        let placeholder = shard_metadata(si, shard, &plans, None, opts);
        shard.header_len = serialize_header(&entries(shard), &placeholder, 0).len() as u64;
    }

    let staging = StagingDir::create(output, run.force)?;
    let files = shards
        .iter()
        .map(|s| {
            let f = staging.create_file(&s.file_name, s.data_start() + s.data_len())?;
            let path = staging.dir.join(&s.file_name);
            for t in s.tensors.iter().filter(|t| t.fixed.is_some()) {
                let bytes = t.fixed.as_deref().unwrap_or_default();
                write_at(&f, bytes, s.data_start() + t.begin)
                    .map_err(|e| ConvertError::io(&path, e))?;
            }
            Ok((f, path))
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;

    let mut jobs: Vec<(u64, Job)> = Vec::new();
    for (si, s) in shards.iter().enumerate() {
        for (ti, t) in s.tensors.iter().enumerate() {
            if t.copy_from.is_some() {
                for chunk in 0..(t.len as usize).div_ceil(COPY_CHUNK) {
                    let len = (t.len as usize - chunk * COPY_CHUNK).min(COPY_CHUNK);
                    jobs.push((
                        len as u64,
                        Job::Copy {
                            tensor: (si, ti),
                            chunk,
                        },
                    ));
                }
            }
        }
    }
    for (pi, p) in plans.iter().enumerate() {
        let elem = dtype_bytes(p.dtype).unwrap_or(4) as u64;
        let per_job = p.info.numel() as u64 * elem / p.jobs() as u64;
        jobs.extend((0..p.jobs()).map(|e| {
            (
                per_job,
                Job::Matrix {
                    plan: pi,
                    expert: e,
                },
            )
        }));
    }
    // Largest first: the pool stays busy to the end.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
    let total_in: u64 = jobs.iter().map(|j| j.0).sum();
    progress.start(total_in);

    let n_results = plans.iter().map(QuantPlan::jobs).sum();
    let results: Vec<Mutex<Option<MatrixInfo>>> =
        (0..n_results).map(|_| Mutex::new(None)).collect();
    let ctx = JobContext {
        ckpt: &ckpt,
        opts,
        shards: &shards,
        plans: &plans,
        files: &files,
        results: &results,
    };
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = run.threads {
        pool = pool.num_threads(n.max(1));
    }
    let pool = pool.build().map_err(|e| {
        ConvertError::Options(format!("cannot start {:?} threads: {e}", run.threads))
    })?;
    let threads = pool.current_num_threads();
    pool.install(|| {
        jobs.par_iter().try_for_each(|&(bytes, job)| {
            ctx.run(job)?;
            progress.advance(bytes);
            Ok::<(), ConvertError>(())
        })
    })?;

    // Final headers, with every matrix's fitted format.
    let results: Vec<MatrixInfo> = results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every job ran")
        })
        .collect();
    let mut output_bytes = 0;
    for (si, s) in shards.iter().enumerate() {
        let meta = shard_metadata(si, s, &plans, Some(&results), opts);
        let header = serialize_header(&entries(s), &meta, s.header_len as usize);
        let (file, path) = &files[si];
        if header.len() as u64 != s.header_len {
            return Err(ConvertError::header(
                path,
                format!(
                    "final header ({} bytes) outgrew its reserved {} bytes",
                    header.len(),
                    s.header_len
                ),
            ));
        }
        write_at(file, &s.header_len.to_le_bytes(), 0).map_err(|e| ConvertError::io(path, e))?;
        write_at(file, &header, 8).map_err(|e| ConvertError::io(path, e))?;
        file.sync_all().map_err(|e| ConvertError::io(path, e))?;
        output_bytes += s.data_len();
    }
    for p in &plans {
        let infos = &results[p.first_result..p.first_result + p.jobs()];
        let s = &mut summaries[p.summary];
        s.format = Some(p.info.format.clone());
        s.nu = infos.iter().map(|m| m.nu).collect();
        s.nu_tensor = infos.iter().map(|m| m.fit_tensor.map(|f| f.nu)).collect();
    }
    write_side_files(&ckpt, &staging, &shards, opts)?;
    staging.commit()?;

    let params: u64 = summaries
        .iter()
        .filter(|s| s.action != "skip")
        .map(|s| s.shape.iter().product::<usize>() as u64)
        .sum();
    let params_quantized: u64 = plans.iter().map(|p| p.info.numel() as u64).sum();
    let seconds = started.elapsed().as_secs_f64();
    let count = |a: Action| summaries.iter().filter(|s| s.action == a.name()).count();
    Ok(ConvertSummary {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        layout: opts.layout.name().into(),
        format: plan_format_name(opts),
        nu: nu_json(opts),
        block: opts.block.to_string(),
        scale_dtype: opts.scale_dtype.name().into(),
        threads,
        quantized: count(Action::Quantize),
        kept: count(Action::Keep),
        skipped: count(Action::Skip),
        tensors: summaries,
        params,
        params_quantized,
        input_bytes: total_in,
        output_bytes,
        bits_per_weight: output_bytes as f64 * 8.0 / params.max(1) as f64,
        seconds,
        mb_per_s: total_in as f64 / 1e6 / seconds.max(1e-9),
    })
}

fn plan_format_name(opts: &ConvertOptions) -> String {
    match opts.nu {
        Some(NuChoice::Fit) => format!("sf{}", opts.bits()),
        _ => opts.format.name().to_string(),
    }
}

fn nu_json(opts: &ConvertOptions) -> Value {
    match opts.nu {
        Some(NuChoice::Fit) => json!("fit"),
        Some(NuChoice::Fixed(v)) => json!(v),
        None => Value::Null,
    }
}

fn refuse_overwriting_input(ckpt: &Checkpoint, output: &Path) -> Result<(), ConvertError> {
    let Ok(out) = output.canonicalize() else {
        return Ok(());
    };
    let touches = |p: &Path| {
        p.canonicalize()
            .is_ok_and(|p| p == out || p.starts_with(&out))
    };
    if touches(ckpt.root()) || ckpt.shards().iter().any(|s| touches(&s.path)) {
        return Err(ConvertError::Options(format!(
            "output '{}' would replace the input checkpoint",
            output.display()
        )));
    }
    Ok(())
}

fn entries(s: &OutShard) -> Vec<OutEntry> {
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

type Plan = (Vec<OutShard>, Vec<QuantPlan>, Vec<TensorSummary>);

/// Decides every tensor and lays out every output shard, from the headers alone.
fn plan(ckpt: &Checkpoint, opts: &ConvertOptions) -> Result<Plan, ConvertError> {
    let mut shards = Vec::new();
    let mut plans = Vec::new();
    let mut summaries = Vec::new();
    let mut n_results = 0;
    for (si, shard) in ckpt.shards().iter().enumerate() {
        let mut out = OutShard {
            file_name: shard.file_name(),
            tensors: Vec::new(),
            base_metadata: shard.header.metadata.clone(),
            header_len: 0,
        };
        for entry in &shard.header.entries {
            let action = opts.policy.decide(&entry.name, &entry.shape, entry.dtype);
            let mut summary = TensorSummary {
                name: entry.name.clone(),
                action: action.name().into(),
                dtype: entry.dtype.to_string(),
                shape: entry.shape.clone(),
                format: None,
                nu: Vec::new(),
                nu_tensor: Vec::new(),
                bits_per_weight: entry.dtype.bitsize() as f64,
            };
            match action {
                Action::Skip => summary.bits_per_weight = 0.0,
                Action::Keep => out.tensors.push(OutTensor {
                    name: entry.name.clone(),
                    dtype: entry.dtype,
                    shape: entry.shape.clone(),
                    len: entry.len as u64,
                    begin: 0,
                    fixed: None,
                    copy_from: Some((si, entry.offset)),
                }),
                Action::Quantize => {
                    let info = plan_info(&entry.shape, entry.dtype, opts);
                    layouts::check_matrix(opts, info.rows(), info.cols())
                        .map_err(|r| ConvertError::tensor(&shard.path, &entry.name, r))?;
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
        Layout::Tquant => {
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
            let b = push(
                format!("{name}{CODEBOOK_SUFFIX}"),
                Dtype::F32,
                with(&[1 << info.bits]),
                None,
            );
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
        first_result,
        summary: 0,
    }
}

/// A shard's `__metadata__`: the input's, plus tquant's version and one description per
/// quantized tensor (tquant layout). Without results, placeholders as wide as any fit.
fn shard_metadata(
    si: usize,
    shard: &OutShard,
    plans: &[QuantPlan],
    results: Option<&[MatrixInfo]>,
    opts: &ConvertOptions,
) -> BTreeMap<String, String> {
    let mut meta = shard.base_metadata.clone();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
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
        let mut info = p.info.clone();
        match results {
            Some(r) => info.matrices = r[p.first_result..p.first_result + p.jobs()].to_vec(),
            None => {
                for m in &mut info.matrices {
                    if opts.nu == Some(NuChoice::Fit) {
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

struct JobContext<'a> {
    ckpt: &'a Checkpoint,
    opts: &'a ConvertOptions,
    shards: &'a [OutShard],
    plans: &'a [QuantPlan],
    files: &'a [(std::fs::File, PathBuf)],
    results: &'a [Mutex<Option<MatrixInfo>>],
}

impl JobContext<'_> {
    fn run(&self, job: Job) -> Result<(), ConvertError> {
        match job {
            Job::Copy {
                tensor: (si, ti),
                chunk,
            } => {
                let t = &self.shards[si].tensors[ti];
                let (in_shard, in_off) = t.copy_from.expect("copy job");
                let src = &self.ckpt.shards()[in_shard];
                let start = (chunk * COPY_CHUNK) as u64;
                let len = (t.len - start).min(COPY_CHUNK as u64) as usize;
                let map = map_range(&src.file, &src.path, in_off + start, len)?;
                let (file, path) = &self.files[si];
                write_at(
                    file,
                    map.bytes(),
                    self.shards[si].data_start() + t.begin + start,
                )
                .map_err(|e| ConvertError::io(path, e))
            }
            Job::Matrix { plan, expert } => self.quantize(&self.plans[plan], expert),
        }
    }

    fn quantize(&self, p: &QuantPlan, e: usize) -> Result<(), ConvertError> {
        let src = &self.ckpt.shards()[p.in_shard];
        let elem = dtype_bytes(p.dtype).unwrap_or(4);
        let (rows, cols) = if p.info.layout == Layout::Bnb {
            (1, p.info.numel())
        } else {
            (p.info.rows(), p.info.cols())
        };
        let len = rows * cols * elem;
        let map = map_range(&src.file, &src.path, p.in_offset + (e * len) as u64, len)?;
        let mut values = Vec::with_capacity(rows * cols);
        extend_f32(p.dtype, map.bytes(), &mut values);
        drop(map);
        let bad = count_non_finite(&values);
        if bad > 0 {
            let tensor = if p.info.experts() > 1 {
                format!("{} (expert {e})", p.name)
            } else {
                p.name.clone()
            };
            return Err(ConvertError::NonFinite {
                path: src.path.clone(),
                tensor,
                count: bad,
                total: values.len(),
            });
        }
        let m = quantize_matrix(&values, rows, cols, self.opts).map_err(|err| {
            ConvertError::Format {
                tensor: p.name.clone(),
                err,
            }
        })?;
        drop(values);
        let shard = &self.shards[p.out_shard];
        let (file, path) = &self.files[p.out_shard];
        let io = |r: std::io::Result<()>| r.map_err(|err| ConvertError::io(path, err));
        io(write_at(
            file,
            &m.codes,
            shard.abs(&p.codes_part) + (e * m.codes.len()) as u64,
        ))?;
        io(write_at(
            file,
            &m.scales,
            shard.abs(&p.scales_part) + (e * m.scales.len()) as u64,
        ))?;
        if let Some(cb) = &p.codebook_part {
            let bytes: Vec<u8> = m
                .info
                .codebook
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            io(write_at(
                file,
                &bytes,
                shard.abs(cb) + (e * bytes.len()) as u64,
            ))?;
        }
        *self.results[p.first_result + e]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(m.info);
        Ok(())
    }
}

/// config.json with a `quantization_config`, the shard index, tokenizer files.
fn write_side_files(
    ckpt: &Checkpoint,
    staging: &StagingDir,
    shards: &[OutShard],
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
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
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
        Layout::Tquant => json!({
            "quant_method": "tquant",
            "version": FORMAT_VERSION,
            "layout": "tquant",
            "format": plan_format_name(opts),
            "bits": opts.bits(),
            "nu": nu_json(opts),
            "block": opts.block.to_string(),
            "scale_dtype": opts.scale_dtype.name(),
            "include": opts.policy.include,
            "exclude": opts.policy.exclude,
        }),
        Layout::Bnb => layouts::bnb_config(),
        Layout::Mxfp4 => json!({
            "quant_method": "mxfp4",
            "modules_to_not_convert": kept_modules(shards),
        }),
    }
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
