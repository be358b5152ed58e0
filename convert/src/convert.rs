//! `tquant convert`: a checkpoint in, a quantized checkpoint out, streamed.
//!
//! 1. Plan from the headers alone: the policy decides per tensor, the layout gives the stored
//!    parts and their sizes, so every output header (with room for the fit results) is known
//!    before any weight is read.
//! 2. Create each output shard at its final size; then, in parallel, every job maps its input
//!    range (one matrix, one expert, or one chunk of a kept tensor), quantizes it and writes the
//!    bytes at their offsets. Peak memory is a few matrices, whatever the model's size.
//! 3. Rewrite each header with the fitted parameters, write index and config, fsync, rename.

use crate::calibration::quantize_matrix_for;
use crate::checkpoint::Checkpoint;
use crate::dtype::{count_non_finite, extend_f32};
use crate::error::ConvertError;
use crate::fp8::is_fp8;
use crate::header::{dtype_bytes, serialize_header};
use crate::mmap::map_range;
use crate::options::ConvertOptions;
pub use crate::plan::TensorSummary;
use crate::plan::{
    entries, nu_json, plan, plan_format_name, shard_metadata, write_side_files, OutShard, QuantPlan,
};
use crate::policy::Action;
use crate::schema::{Layout, MatrixInfo};
use crate::writer::{write_at, StagingDir};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Kept tensors are copied in windows of this many bytes, so a huge embedding is never mapped
/// (and resident) whole.
const COPY_CHUNK: usize = 64 << 20;

/// Receives progress in bytes of input processed.
pub trait Progress: Sync {
    /// Called once with the bytes of input the conversion will process.
    fn start(&self, _total_bytes: u64) {}
    /// Called as `bytes` more of input are processed.
    fn advance(&self, _bytes: u64) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Progress given to two functions, as a front end's progress bar takes it.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tquant_convert::convert::{Progress, ProgressFns};
/// let (total, done) = (AtomicU64::new(0), AtomicU64::new(0));
/// let progress = ProgressFns {
///     start: |t| total.store(t, Ordering::Relaxed),
///     advance: |b| _ = done.fetch_add(b, Ordering::Relaxed),
/// };
/// progress.start(10);
/// progress.advance(4);
/// assert_eq!((total.into_inner(), done.into_inner()), (10, 4));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ProgressFns<S, A> {
    /// Called once with the bytes of input the conversion will process.
    pub start: S,
    /// Called as more bytes of input are processed.
    pub advance: A,
}

impl<S: Fn(u64) + Sync, A: Fn(u64) + Sync> Progress for ProgressFns<S, A> {
    fn start(&self, total_bytes: u64) {
        (self.start)(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        (self.advance)(bytes);
    }
}

/// How the conversion runs (not what it produces).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replace an existing output (atomically).
    pub force: bool,
    /// Worker threads; `None` or `Some(0)` uses one per core.
    pub threads: Option<usize>,
}

/// What a conversion did; `tquant convert --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertSummary {
    /// The checkpoint converted.
    pub input: PathBuf,
    /// The output directory.
    pub output: PathBuf,
    /// The layout written (`tquant`, `bnb`, `mxfp4`).
    pub layout: String,
    /// The format asked for (`sf4` for fitted or searched nu, `auto:...`).
    pub format: String,
    /// nu: `"fit"`, `"search"`, a number, or null for formats without one.
    pub nu: Value,
    /// The block size (`64`, `row`).
    pub block: String,
    /// The scale dtype.
    pub scale_dtype: String,
    /// `absmax` or `search`.
    pub scale_rule: String,
    /// Worker threads used.
    pub threads: usize,
    /// Every tensor of the input, in file order.
    pub tensors: Vec<TensorSummary>,
    /// Tensors quantized (q8_0 ones included).
    pub quantized: usize,
    /// Of those, the tensors stored as q8_0 (embeddings and output head by default).
    pub q8_0: usize,
    /// Tensors copied unchanged (or dequantized from FP8).
    pub kept: usize,
    /// Tensors left out as derived buffers.
    pub skipped: usize,
    /// Tensors `--drop` left out of the output.
    pub dropped: Vec<String>,
    /// Kept FP8 weights, written dequantized as BF16.
    pub dequantized: Vec<String>,
    /// Parameters written.
    pub params: u64,
    /// Parameters quantized (q8_0 ones included).
    pub params_quantized: u64,
    /// Bytes of input read.
    pub input_bytes: u64,
    /// Bytes of tensor data written.
    pub output_bytes: u64,
    /// Output tensor bytes * 8 / parameters: every stored byte (codes, scales, codebooks, kept
    /// tensors; q8_0 ones at 8.5 bits per weight) over every parameter written.
    pub bits_per_weight: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Input megabytes (1e6) per second.
    pub mb_per_s: f64,
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
    /// A kept FP8 weight, written as BF16.
    Dequantize {
        tensor: (usize, usize),
    },
    /// Rows of a q8_0 tensor.
    Q8 {
        plan: usize,
        chunk: usize,
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
    // Staged calibration: the metadata's summary comes from the outline; each stage's
    // statistics are collected when its matrices are quantized.
    let outlined;
    let opts = match &opts.staged_calibration {
        Some(staged) => {
            outlined = ConvertOptions {
                calibration: Some(Arc::new(staged.0.outline())),
                ..opts.clone()
            };
            &outlined
        }
        None => opts,
    };
    let ckpt = Checkpoint::open(input)?;
    if ckpt.is_quantized() {
        return Err(ConvertError::NotACheckpoint {
            path: input.to_path_buf(),
            reason: "it is already quantized".into(),
        });
    }
    refuse_overwriting_input(&ckpt, output)?;
    let (shards, mut plans, mut summaries) = plan(&ckpt, opts)?;

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

    // Batch 0: copies and matrices without a calibration stage; batch s + 1: stage s (a fused
    // expert tensor's matrices can be in different stages).
    let staged = opts.staged_calibration.as_ref().map(|s| s.0.clone());
    let stage_count = staged.as_ref().map_or(0, |s| s.stages());
    let mut batches: Vec<Vec<(u64, Job)>> = vec![Vec::new(); stage_count + 1];
    let jobs = &mut batches[0];
    for (si, s) in shards.iter().enumerate() {
        for (ti, t) in s.tensors.iter().enumerate() {
            if t.dequantize {
                jobs.push((t.len / 2, Job::Dequantize { tensor: (si, ti) }));
            }
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
        if p.info.is_q8_0() {
            let (rows, per) = (p.info.experts() * p.info.rows(), p.q8_rows_per_chunk());
            for chunk in 0..p.q8_chunks() {
                let n = per.min(rows - chunk * per);
                let bytes = (n * p.info.cols()) as u64 * elem;
                batches[0].push((bytes, Job::Q8 { plan: pi, chunk }));
            }
            continue;
        }
        let per_job = p.info.numel() as u64 * elem / p.jobs() as u64;
        let fused = p.info.shape.len() == 3;
        for e in 0..p.jobs() {
            let stage = staged
                .as_ref()
                .and_then(|s| s.stage_of(&p.name, fused.then_some(e)));
            let batch = match stage {
                Some(stage) if stage < stage_count => stage + 1,
                _ => 0,
            };
            let job = Job::Matrix {
                plan: pi,
                expert: e,
            };
            batches[batch].push((per_job, job));
        }
    }
    // Largest first: the pool stays busy to the end.
    for batch in &mut batches {
        batch.sort_by_key(|j| std::cmp::Reverse(j.0));
    }
    let total_in: u64 = batches.iter().flatten().map(|j| j.0).sum();
    progress.start(total_in);

    let n_results = plans.iter().map(QuantPlan::jobs).sum();
    let results: Vec<Mutex<Option<MatrixInfo>>> =
        (0..n_results).map(|_| Mutex::new(None)).collect();
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(n) = run.threads {
        pool = pool.num_threads(n); // 0: rayon's default, one per core
    }
    let pool = pool.build().map_err(|source| ConvertError::Threads {
        threads: run.threads,
        source,
    })?;
    let threads = pool.current_num_threads();
    let global_scales = fused_global_scales(&ckpt, &plans, opts)?;
    for (b, batch) in batches.iter().enumerate() {
        let stage_opts;
        let batch_opts = match (&staged, b) {
            (Some(staged), 1..) => {
                stage_opts = ConvertOptions {
                    calibration: Some(Arc::new(staged.collect(b - 1)?)),
                    ..opts.clone()
                };
                &stage_opts
            }
            _ => opts,
        };
        let ctx = JobContext {
            ckpt: &ckpt,
            opts: batch_opts,
            shards: &shards,
            plans: &plans,
            files: &files,
            results: &results,
            global_scales: &global_scales,
        };
        pool.install(|| {
            batch.par_iter().try_for_each(|&(bytes, job)| {
                ctx.run(job)?;
                progress.advance(bytes);
                Ok::<(), ConvertError>(())
            })
        })?;
        if let (Some(cal), 1..) = (&batch_opts.calibration, b) {
            // The stage's statistics are known now: its matrices' real records.
            for (_, job) in batch {
                if let Job::Matrix { plan, expert } = *job {
                    let p = &mut plans[plan];
                    let e = (p.info.shape.len() == 3).then_some(expert);
                    cal.fill_record(&mut p.info.calibration, &p.name, &p.info.shape, e);
                }
            }
        }
    }

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
        let infos = match p.info.is_q8_0() {
            true => &p.info.matrices[..],
            false => &results[p.first_result..p.first_result + p.jobs()],
        };
        let s = &mut summaries[p.summary];
        s.format = Some(p.info.format.clone());
        s.formats = infos.iter().map(|m| m.format.clone()).collect();
        s.nu = infos.iter().map(|m| m.nu).collect();
        s.nu_tensor = infos.iter().map(|m| m.fit_tensor.map(|f| f.nu)).collect();
    }
    let dropped: Vec<&str> = summaries
        .iter()
        .filter(|s| s.action == Action::Drop.name())
        .map(|s| s.name.as_str())
        .collect();
    write_side_files(&ckpt, &staging, &shards, &dropped, opts)?;
    staging.commit()?;

    let params: u64 = summaries
        .iter()
        .filter(|s| s.action != Action::Skip.name() && s.action != Action::Drop.name())
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
        scale_rule: opts.scale_rule.name().into(),
        threads,
        quantized: count(Action::Quantize),
        q8_0: plans.iter().filter(|p| p.info.is_q8_0()).count(),
        kept: count(Action::Keep),
        skipped: count(Action::Skip),
        dropped: summaries
            .iter()
            .filter(|s| s.action == Action::Drop.name())
            .map(|s| s.name.clone())
            .collect(),
        dequantized: summaries
            .iter()
            .filter(|s| s.stored_dtype.is_some())
            .map(|s| s.name.clone())
            .collect(),
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

fn refuse_overwriting_input(ckpt: &Checkpoint, output: &Path) -> Result<(), ConvertError> {
    let Ok(out) = output.canonicalize() else {
        return Ok(());
    };
    let touches = |p: &Path| {
        p.canonicalize()
            .is_ok_and(|p| p == out || p.starts_with(&out))
    };
    if touches(ckpt.root()) || ckpt.shards().iter().any(|s| touches(&s.path)) {
        return Err(ConvertError::OverwritesInput {
            output: output.to_path_buf(),
        });
    }
    Ok(())
}

/// NVFP4 (compressed-tensors, ModelOpt): the amax fused layers share, from a first read of
/// their weights (empty for every other layout).
fn fused_global_scales(
    ckpt: &Checkpoint,
    plans: &[QuantPlan],
    opts: &ConvertOptions,
) -> Result<BTreeMap<String, f32>, ConvertError> {
    use crate::compressed_tensors::{fused_group, shared_amax};
    if !matches!(opts.layout, Layout::CompressedTensors | Layout::ModelOpt)
        || opts.scale_dtype != tquant_formats::ScaleDtype::E4m3
    {
        return Ok(BTreeMap::new());
    }
    let amax = plans
        .iter()
        .filter(|p| fused_group(&p.name).is_some())
        .map(|p| {
            let v = ckpt.dense_f32(&p.name)?;
            Ok((p.name.clone(), v.iter().fold(0.0f32, |m, x| m.max(x.abs()))))
        })
        .collect::<Result<Vec<_>, ConvertError>>()?;
    Ok(shared_amax(&amax))
}

struct JobContext<'a> {
    ckpt: &'a Checkpoint,
    opts: &'a ConvertOptions,
    shards: &'a [OutShard],
    plans: &'a [QuantPlan],
    files: &'a [(std::fs::File, PathBuf)],
    results: &'a [Mutex<Option<MatrixInfo>>],
    /// The largest magnitudes NVFP4 fused layers share (compressed-tensors, ModelOpt).
    global_scales: &'a BTreeMap<String, f32>,
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
            Job::Q8 { plan, chunk } => self.quantize_q8(&self.plans[plan], chunk),
            Job::Dequantize { tensor: (si, ti) } => {
                let t = &self.shards[si].tensors[ti];
                let bytes: Vec<u8> = self
                    .ckpt
                    .dense_f32(&t.name)?
                    .into_iter()
                    .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
                    .collect();
                let (file, path) = &self.files[si];
                write_at(file, &bytes, self.shards[si].data_start() + t.begin)
                    .map_err(|e| ConvertError::io(path, e))
            }
        }
    }

    /// Rows `chunk * per..` of a q8_0 tensor: read, quantized as ggml does, written.
    fn quantize_q8(&self, p: &QuantPlan, chunk: usize) -> Result<(), ConvertError> {
        let src = &self.ckpt.shards()[p.in_shard];
        let (rows, cols) = (p.info.experts() * p.info.rows(), p.info.cols());
        let per = p.q8_rows_per_chunk();
        let (r0, n) = (chunk * per, per.min(rows - chunk * per));
        let values = if is_fp8(p.dtype) {
            // One chunk: the whole weight with its block scales.
            self.ckpt.dense_f32(&p.name)?
        } else {
            let elem = dtype_bytes(p.dtype).unwrap_or(4);
            let at = p.in_offset + (r0 * cols * elem) as u64;
            let map = map_range(&src.file, &src.path, at, n * cols * elem)?;
            let mut values = Vec::with_capacity(n * cols);
            extend_f32(p.dtype, map.bytes(), &mut values);
            values
        };
        let bad = count_non_finite(&values);
        if bad > 0 {
            return Err(ConvertError::NonFinite {
                path: src.path.clone(),
                tensor: p.name.clone(),
                count: bad,
                total: values.len(),
            });
        }
        let m = tquant_formats::q8_0::Q8Matrix::quantize(&values, n, cols).map_err(|err| {
            ConvertError::Format {
                tensor: p.name.clone(),
                source: err,
            }
        })?;
        drop(values);
        let (file, path) = &self.files[p.out_shard];
        let bpr = p.info.blocks_per_row();
        write_at(file, &m.code_bytes(), p.codes_at + (r0 * cols) as u64)
            .map_err(|err| ConvertError::io(path, err))?;
        write_at(file, &m.scale_bytes(), p.scales_at + (r0 * bpr * 2) as u64)
            .map_err(|err| ConvertError::io(path, err))
    }

    fn quantize(&self, p: &QuantPlan, e: usize) -> Result<(), ConvertError> {
        let src = &self.ckpt.shards()[p.in_shard];
        let elem = dtype_bytes(p.dtype).unwrap_or(4);
        let (rows, cols) = if p.info.layout == Layout::Bnb {
            (1, p.info.numel())
        } else {
            (p.info.rows(), p.info.cols())
        };
        let values = if is_fp8(p.dtype) {
            // 2-D (checked at open): one job, the whole weight dequantized with its scales.
            self.ckpt.dense_f32(&p.name)?
        } else {
            let len = rows * cols * elem;
            let map = map_range(&src.file, &src.path, p.in_offset + (e * len) as u64, len)?;
            let mut values = Vec::with_capacity(rows * cols);
            extend_f32(p.dtype, map.bytes(), &mut values);
            values
        };
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
        let expert = (p.info.shape.len() == 3).then_some(e);
        let m = match self.global_scales.get(&p.name) {
            Some(&a) => crate::compressed_tensors::quantize_nvfp4_with(
                &values,
                rows,
                cols,
                a,
                self.opts.layout,
            ),
            None => quantize_matrix_for(&p.name, expert, &values, rows, cols, self.opts),
        }
        .map_err(|err| ConvertError::Format {
            tensor: p.name.clone(),
            source: err,
        })?;
        drop(values);
        let (file, path) = &self.files[p.out_shard];
        let write = |bytes: &[u8], at: u64| {
            write_at(file, bytes, at + (e * bytes.len()) as u64)
                .map_err(|err| ConvertError::io(path, err))
        };
        write(&m.codes, p.codes_at)?;
        write(&m.scales, p.scales_at)?;
        if let Some(at) = p.codebook_at {
            // compressed-tensors' third part is NVFP4's tensor scale, not a table.
            let table: Vec<u8> =
                if matches!(p.info.layout, Layout::CompressedTensors | Layout::ModelOpt) {
                    m.info
                        .global_scale
                        .map(|g| g.to_le_bytes().to_vec())
                        .unwrap_or_default()
                } else if p.info.format == crate::schema::LEARNED_ROW {
                    m.info
                        .row_tables
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect()
                } else {
                    m.info
                        .codebook
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect()
                };
            write(&table, at)?;
        }
        *self.results[p.first_result + e]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(m.info);
        Ok(())
    }
}
