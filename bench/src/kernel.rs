//! The kernel benchmark behind `tquant bench gemv|gemm`: every available kernel path and mode on
//! one random quantized matrix, the same weights as bf16 (both modes of the bf16 kernels) and
//! the dense f32 product of the same binary on the same weights,
//! and the machine's read bandwidth (summing a buffer larger than the caches), all with the
//! same number of threads. Times are medians over rounds in which every measurement runs once,
//! so a busy machine slows them alike; before each run the caches are swept, so a GEMV reads
//! its weights from DRAM as in decoding.

use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tquant_formats::q8_0::Q8Matrix;
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, Format, FormatError, QuantizedMatrix};
use tquant_kernels::{
    matmul_bf16_with, matmul_f32, matmul_q8_0_with, matmul_with, Isa, KernelError, Mode, QMatrix,
};

/// Errors of the kernel benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The format or the quantizer refused the matrix.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A kernel refused the product.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The thread pool could not be built.
    #[error("building the thread pool: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
}

/// The weights a benchmark multiplies: a catalog format at the spec's block quantizer, or
/// q8_0 (int8 codes and an f16 scale per 32, as the converter stores embeddings and the head).
#[derive(Debug, Clone)]
pub enum Weights {
    /// A codebook format of the catalog.
    Table(Format),
    /// ggml's Q8_0 layout; the spec's quantizer does not apply.
    Q8_0,
}

impl std::str::FromStr for Weights {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "q8_0" => Ok(Self::Q8_0),
            _ => s.parse().map(Self::Table),
        }
    }
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Table(format) => write!(f, "{format}"),
            Self::Q8_0 => f.write_str("q8_0"),
        }
    }
}

impl From<Format> for Weights {
    fn from(format: Format) -> Self {
        Self::Table(format)
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Output features (weight rows).
    pub rows: usize,
    /// Input features (weight columns).
    pub cols: usize,
    /// Activation rows (1: GEMV).
    pub n: usize,
    /// The weight format.
    pub format: Weights,
    /// Block length and scale dtype of the weights.
    pub quantizer: BlockQuantizer,
    /// Timed rounds (after one warm-up round).
    pub reps: usize,
    /// 0: one per core.
    pub threads: usize,
    /// Size of the buffer whose summation gives the read bandwidth, MiB.
    pub read_mib: usize,
}

/// One measurement's median time and the rates it gives.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    /// Median seconds per product.
    pub seconds: f64,
    /// Weight bytes read per second, GB/s.
    pub weight_gbps: f64,
    /// Multiply-adds (two flops each) per second, GFLOP/s.
    pub gflops: f64,
}

impl Measure {
    fn new(seconds: f64, weight_bytes: usize, macs: usize) -> Self {
        Measure {
            seconds,
            weight_gbps: weight_bytes as f64 / seconds / 1e9,
            gflops: 2.0 * macs as f64 / seconds / 1e9,
        }
    }
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct Results {
    /// Every available instruction set (but the reference) in every mode.
    pub kernels: Vec<(Isa, Mode, Measure)>,
    /// The same weights as bf16 through the bf16 kernels, every instruction set and mode.
    pub bf16: Vec<(Isa, Mode, Measure)>,
    /// The dense f32 product of the same weights.
    pub f32: Measure,
    /// The machine's read bandwidth, GB/s.
    pub read_gbps: f64,
    /// Elements per block (a row's length for `row`).
    pub block: usize,
    /// Bits per weight of the quantized matrix, scales included.
    pub bits_per_weight: f64,
    /// Threads every measurement ran on.
    pub threads: usize,
    /// Bytes summed before each timed run to evict the weights.
    pub sweep_bytes: usize,
}

/// Runs the benchmark.
pub fn run(spec: &Spec) -> Result<Results, BenchError> {
    let (rows, cols, n, reps) = (spec.rows, spec.cols, spec.n, spec.reps.max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spec.threads) // 0: rayon's default, one per core
        .build()?;
    let quantizer = spec.quantizer;
    let (w, m) = match &spec.format {
        Weights::Table(format) => {
            quantizer.check(format.codebook())?;
            let (w, m) = pool.install(|| random_weights(format, quantizer, rows, cols));
            (w, Quantized::Table(format.codebook().values(), m))
        }
        Weights::Q8_0 => {
            let w = pool.install(|| student_t_weights(rows, cols));
            let m = Q8Matrix::quantize(&w, rows, cols)?;
            (w, Quantized::Q8(m))
        }
    };
    let x = Rng::new(7).normal_vec(n * cols);
    let (qbytes, block, bits_per_weight) = match &m {
        Quantized::Table(_, m) => (m.codes.len() + m.scales.len(), m.block, m.bits_per_weight()),
        Quantized::Q8(m) => {
            let bytes = m.codes.len() + 2 * m.scales.len();
            (
                bytes,
                tquant_kernels::int8::Q8_BLOCK,
                8.0 * bytes as f64 / (rows * cols) as f64,
            )
        }
    };
    let q = match &m {
        Quantized::Table(values, m) => Kernel::Table(QMatrix::from_quantized(m, values)?),
        Quantized::Q8(m) => Kernel::Q8(tquant_kernels::Q8Matrix::new(
            rows, cols, &m.codes, &m.scales,
        )?),
    };
    let macs = rows * cols * n;
    let read_buf: Vec<u64> = pool.install(|| {
        (0..(spec.read_mib << 20) / 8)
            .into_par_iter()
            .map(|i| i as u64)
            .collect()
    });

    // Every measurement runs once per round, rounds repeat: whatever else the machine does
    // slows all of them alike, so their ratios hold. Summing part of the read buffer (larger
    // than the last-level cache) before each run evicts the weights: a GEMV reads them from
    // DRAM. Both happen in one `install`, and the clock runs inside it, so waking the pool's
    // threads is not timed.
    let sweep = &read_buf[..read_buf.len().min(SWEEP)];
    let timed = |f: &mut (dyn FnMut() + Send)| -> f64 {
        pool.install(|| {
            std::hint::black_box(parallel_sum(sweep));
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
    };
    // The same weights rounded to bf16, for the bf16 kernels.
    let w16: Vec<u16> = w
        .iter()
        .map(|&v| tquant_kernels::bf16::f32_to_bf16(v))
        .collect();
    let mut labels: Vec<Label> = Vec::new();
    let mut runs: Vec<Box<dyn FnMut() + Send + '_>> = Vec::new();
    for isa in Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Reference)
    {
        for mode in Mode::ALL {
            let x = &x;
            let mut y = vec![0.0f32; n * rows];
            labels.push(Label::Quant(isa, mode));
            let q = &q;
            runs.push(Box::new(move || {
                match q {
                    Kernel::Table(q) => matmul_with(isa, q, x, n, &mut y, mode),
                    Kernel::Q8(q) => matmul_q8_0_with(isa, q, x, n, &mut y, mode),
                }
                .expect("shapes were checked")
            }));
        }
        for mode in Mode::ALL {
            let (x, w16) = (&x, &w16);
            let mut y = vec![0.0f32; n * rows];
            labels.push(Label::Bf16(isa, mode));
            runs.push(Box::new(move || {
                matmul_bf16_with(isa, w16, rows, cols, x, n, &mut y, mode)
                    .expect("shapes were checked")
            }));
        }
    }
    {
        let (x, w) = (&x, &w);
        let mut y = vec![0.0f32; n * rows];
        labels.push(Label::F32);
        runs.push(Box::new(move || {
            matmul_f32(w, rows, cols, x, n, &mut y).expect("shapes were checked")
        }));
    }
    let mut times = vec![Vec::with_capacity(reps); runs.len()];
    let mut read_times = Vec::with_capacity(reps);
    for round in 0..=reps {
        let read = timed(&mut || {
            std::hint::black_box(parallel_sum(&read_buf));
        });
        // The first round warms up (page faults, thread start).
        if round > 0 {
            read_times.push(read);
        }
        for (run, t) in runs.iter_mut().zip(times.iter_mut()) {
            let seconds = timed(run.as_mut());
            if round > 0 {
                t.push(seconds);
            }
        }
    }
    drop(runs);
    let read_gbps = (read_buf.len() * 8) as f64 / median(read_times) / 1e9;
    let mut kernels = Vec::new();
    let mut bf16 = Vec::new();
    let mut f32 = None;
    for (label, t) in labels.into_iter().zip(times) {
        match label {
            Label::Quant(isa, mode) => {
                kernels.push((isa, mode, Measure::new(median(t), qbytes, macs)))
            }
            Label::Bf16(isa, mode) => {
                bf16.push((isa, mode, Measure::new(median(t), 2 * rows * cols, macs)))
            }
            Label::F32 => f32 = Some(Measure::new(median(t), 4 * rows * cols, macs)),
        }
    }
    Ok(Results {
        kernels,
        bf16,
        f32: f32.expect("the f32 run is always there"),
        read_gbps,
        block,
        bits_per_weight,
        threads: pool.current_num_threads(),
        sweep_bytes: sweep.len() * 8,
    })
}

/// The quantized weights as made: codebook codes and scales with the codebook's values, or
/// q8_0.
enum Quantized<'f> {
    Table(&'f [f32], QuantizedMatrix),
    Q8(Q8Matrix),
}

/// The kernels' view of [`Quantized`].
enum Kernel<'a> {
    Table(QMatrix<'a>),
    Q8(tquant_kernels::Q8Matrix<'a>),
}

/// What a timed run multiplies: the quantized matrix, its weights as bf16, or as f32.
enum Label {
    Quant(Isa, Mode),
    Bf16(Isa, Mode),
    F32,
}

/// The caches of the machine and what they mean for `results` (an f32 matrix of
/// `f32_bytes`): a note when the weights could come from a cache.
pub fn machine_cache_note(results: &Results, f32_bytes: usize) -> String {
    let over = results
        .kernels
        .iter()
        .chain(&results.bf16)
        .map(|k| &k.2)
        .chain([&results.f32])
        .any(|m| m.weight_gbps > results.read_gbps);
    cache_note(
        &cache_sizes(Path::new(CACHE_DIR)),
        f32_bytes,
        results.sweep_bytes,
        over,
    )
}

/// Where Linux lists the first CPU's caches.
pub const CACHE_DIR: &str = "/sys/devices/system/cpu/cpu0/cache";

/// (level, bytes) of the data and unified caches listed under `dir`, smallest level first.
pub fn cache_sizes(dir: &Path) -> Vec<(u32, usize)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut caches: Vec<(u32, usize)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| read(p.join("type")) != "Instruction")
        .filter_map(|p| {
            let level = read(p.join("level")).parse().ok()?;
            let size = read(p.join("size"));
            let bytes = match size.strip_suffix('K') {
                Some(k) => k.parse::<usize>().ok()? << 10,
                None => size.strip_suffix('M')?.parse::<usize>().ok()? << 20,
            };
            Some((level, bytes))
        })
        .collect();
    caches.sort();
    caches.dedup_by_key(|c| c.0);
    caches
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Why a figure can exceed the read bandwidth: the weights were (partly) read from a cache.
pub fn cache_note(
    caches: &[(u32, usize)],
    f32_bytes: usize,
    sweep_bytes: usize,
    over: bool,
) -> String {
    let mut note = String::new();
    let Some(&(last, last_bytes)) = caches.last() else {
        note.push_str(&format!(
            "cache sizes unknown (nothing readable in {CACHE_DIR})"
        ));
        if over {
            note.push_str(
                ": above 100% of the read bandwidth, weights came from a cache, not DRAM",
            );
        }
        note.push('\n');
        return note;
    };
    if let Some(&(level, bytes)) = caches.iter().find(|c| c.1 >= f32_bytes) {
        note.push_str(&format!(
            "note: the f32 matrix ({}) fits in the L{level} cache ({})",
            mib(f32_bytes),
            mib(bytes)
        ));
        if sweep_bytes < last_bytes {
            note.push_str(&format!(
                ", and the {} swept before each run does not evict the L{last} ({}): the \
                 weights can stay cached, so these are cache speeds",
                mib(sweep_bytes),
                mib(last_bytes)
            ));
        } else {
            note.push_str(&format!(
                "; the {} swept before each run evicts it, but prefetch and reuse can still \
                 beat DRAM",
                mib(sweep_bytes)
            ));
        }
        if over {
            note.push_str("; over 100% of the read bandwidth means read from cache");
        }
        note.push('\n');
    } else if over {
        note.push_str(&format!(
            "note: over 100% of the read bandwidth: part of the weights came from the L{last} \
             cache ({})\n",
            mib(last_bytes)
        ));
    }
    note
}

/// Student-t(5) weights (as in trained models, heavy-tailed) and their quantization, both made
/// band by band on the current pool.
fn random_weights(
    format: &Format,
    quantizer: BlockQuantizer,
    rows: usize,
    cols: usize,
) -> (Vec<f32>, QuantizedMatrix) {
    let bands: Vec<(Vec<f32>, QuantizedMatrix)> = (0..rows.div_ceil(BAND))
        .into_par_iter()
        .map(|b| {
            let r = BAND.min(rows - b * BAND);
            let w = student_t_band(b, r, cols);
            let m = quantizer
                .quantize(format.codebook(), &w, r, cols)
                .expect("the shape and format were checked");
            (w, m)
        })
        .collect();
    let mut w = Vec::with_capacity(rows * cols);
    let mut all = QuantizedMatrix {
        rows,
        cols,
        block: bands[0].1.block,
        scale_dtype: quantizer.scale_dtype,
        codes: Vec::new(),
        scales: Vec::new(),
    };
    for (bw, bm) in bands {
        w.extend_from_slice(&bw);
        all.codes.extend_from_slice(&bm.codes);
        all.scales.extend_from_slice(&bm.scales);
    }
    (w, all)
}

/// Weight rows generated (and quantized) together.
const BAND: usize = 256;

/// Band `b` of the weights: `r` rows of Student-t(5) values times 0.02.
fn student_t_band(b: usize, r: usize, cols: usize) -> Vec<f32> {
    Rng::new(1000 + b as u64)
        .student_t_vec(r * cols, 5.0)
        .into_iter()
        .map(|v| v * 0.02)
        .collect()
}

/// The weights [`random_weights`] quantizes, unquantized, made band by band on the current
/// pool.
fn student_t_weights(rows: usize, cols: usize) -> Vec<f32> {
    let bands: Vec<Vec<f32>> = (0..rows.div_ceil(BAND))
        .into_par_iter()
        .map(|b| student_t_band(b, BAND.min(rows - b * BAND), cols))
        .collect();
    bands.concat()
}

/// Elements of the read buffer summed before each timed run: 64 MiB, twice the last-level
/// cache of the machines this was tuned on (the output says when the L3 is larger).
const SWEEP: usize = 8 << 20;

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Sum of `v` split over the current pool's threads.
pub(crate) fn parallel_sum(v: &[u64]) -> u64 {
    let part = v.len().div_ceil(rayon::current_num_threads()).max(8);
    v.par_chunks(part).map(sum).reduce(|| 0, u64::wrapping_add)
}

fn sum(v: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in v.chunks_exact(8) {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_q8_0_and_catalog_names() {
        assert!(matches!("q8_0".parse::<Weights>(), Ok(Weights::Q8_0)));
        let nf4: Weights = "nf4".parse().unwrap();
        assert_eq!(nf4.to_string(), "nf4");
        assert_eq!(Weights::Q8_0.to_string(), "q8_0");
        assert!("q8_1".parse::<Weights>().is_err());
    }

    #[test]
    fn q8_0_runs_every_path_and_mode() {
        // 70 columns: a ragged last block of 6.
        for (cols, bits) in [(64, 8.5), (70, 8.0 + 16.0 * 3.0 / 70.0)] {
            let spec = Spec {
                rows: 12,
                cols,
                n: 1,
                format: Weights::Q8_0,
                quantizer: BlockQuantizer {
                    block: tquant_formats::BlockSize::new(32).unwrap(),
                    scale_dtype: tquant_formats::ScaleDtype::F16,
                },
                reps: 1,
                threads: 1,
                read_mib: 1,
            };
            let r = run(&spec).unwrap();
            let want: Vec<(Isa, Mode)> = Isa::available()
                .into_iter()
                .filter(|&i| i != Isa::Reference)
                .flat_map(|i| Mode::ALL.map(|m| (i, m)))
                .collect();
            let got: Vec<(Isa, Mode)> = r.kernels.iter().map(|k| (k.0, k.1)).collect();
            assert_eq!(got, want);
            assert!(r.kernels.iter().all(|k| k.2.seconds > 0.0));
            assert_eq!(r.block, 32);
            assert!(
                (r.bits_per_weight - bits).abs() < 1e-9,
                "{}",
                r.bits_per_weight
            );
            let table = r.table(&spec);
            assert!(table.contains("q8_0 block 32 f16"), "{table}");
        }
    }

    #[test]
    fn cache_sizes_read_sysfs_layout_and_skip_instruction_caches() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (level, kind, size)) in [
            ("1", "Data", "48K"),
            ("1", "Instruction", "64K"),
            ("2", "Unified", "2048K"),
            ("3", "Unified", "32M"),
        ]
        .into_iter()
        .enumerate()
        {
            let d = dir.path().join(format!("index{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("level"), format!("{level}\n")).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        let c = cache_sizes(dir.path());
        assert_eq!(c, [(1, 48 << 10), (2, 2 << 20), (3, 32 << 20)]);
        let note = cache_note(&c, 1 << 20, 64 << 20, true);
        assert!(note.contains("fits in the L2 cache (2.0 MiB)"), "{note}");
        assert!(note.contains("over 100%"), "{note}");
        let note = cache_note(&c, 1 << 20, 16 << 20, false);
        assert!(note.contains("does not evict the L3"), "{note}");
        assert!(cache_note(&c, 64 << 20, 64 << 20, false).is_empty());
        assert!(cache_note(&[], 1, 1, false).contains("cache sizes unknown"));
    }
}
