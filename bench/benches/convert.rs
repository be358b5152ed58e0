//! Converter throughput, in bytes of bf16 input (criterion reports MB/s; with one thread that is
//! MB per second per thread), Student-t fit included where the format fits nu.
//!
//! - `convert/tensor`: one DeepSeek-V2-Lite routed-expert matrix (1408 x 2048) through
//!   `quantize_tensor` on one thread: sf4 with fitted nu (the default), sf4 with nu fixed (the
//!   same quantization without the fit), nf4, and bitsandbytes' NF4 layout; and the default's
//!   baselines: `sf4_fit_2^18_sample` (the fits on the converter's earlier, larger samples) and
//!   `sf4_fit_all_values` (`FitSampling::Full`).
//! - `convert/checkpoint`: `convert()` end to end on a generated ~100 MB bf16 checkpoint
//!   (mmap in, fit, quantize, streaming atomic write), on 1 and 2 threads.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use tquant_convert::convert::{NoProgress, RunOptions};
use tquant_convert::header::{serialize_header, OutEntry};
use tquant_convert::quantize::fit_sample;
use tquant_convert::{quantize_tensor, ConvertOptions, Dtype, Layout, Policy};
use tquant_formats::fit::{
    fit_block_standardized, fit_block_standardized_with, fit_student_t, fit_student_t_with,
    FitSampling, TFit,
};
use tquant_formats::sample::Rng;

const ROWS: usize = 1408;
const COLS: usize = 2048;

/// f32 -> bf16 bits, round to nearest even (finite inputs).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// Weight-like values (Student-t, nu = 6, scale 0.02), rounded through bf16 as a checkpoint
/// would hold them.
fn weights(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.student_t_vec(n, 6.0)
        .into_iter()
        .map(|v| f32::from_bits((bf16_bits(v * 0.02) as u32) << 16))
        .collect()
}

fn opts(format: &str, nu: Option<&str>, layout: Layout) -> ConvertOptions {
    ConvertOptions::from_args(Some(format), nu, None, None, layout, Policy::default()).unwrap()
}

fn tensor(c: &mut Criterion) {
    let w = weights(&mut Rng::new(1), ROWS * COLS);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("convert/tensor");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((ROWS * COLS * 2) as u64));
    for (id, o) in [
        ("sf4_fit", opts("sf4", Some("fit"), Layout::Tquant)),
        ("sf4_nu5", opts("sf4", Some("5"), Layout::Tquant)),
        ("nf4", opts("nf4", None, Layout::Tquant)),
        ("bnb_nf4", opts("nf4", None, Layout::Bnb)),
    ] {
        g.bench_function(BenchmarkId::new(id, format!("{ROWS}x{COLS}")), |b| {
            b.iter(|| {
                pool.install(|| quantize_tensor("w", &w, &[ROWS, COLS], Dtype::BF16, &o).unwrap())
            })
        });
    }
    // The default's baselines: the same conversion with the fits on larger samples (the
    // converter's earlier budgets, 2^18 and 2^16 evenly spaced values) and on every value.
    let fitted = |fit: &(dyn Fn() -> (TFit, TFit) + Sync)| {
        let (codebook_fit, _profile) = fit();
        let o = opts(
            "sf4",
            Some(&format!("{:.3}", codebook_fit.nu)),
            Layout::Tquant,
        );
        quantize_tensor("w", &w, &[ROWS, COLS], Dtype::BF16, &o).unwrap()
    };
    let before = || {
        (
            fit_block_standardized(&fit_sample(&w, 64, 1 << 18), 64),
            fit_student_t(&fit_sample(&w, 64, 1 << 16)),
        )
    };
    let full = || {
        (
            fit_block_standardized_with(&w, 64, FitSampling::Full),
            fit_student_t_with(&w, 64, FitSampling::Full),
        )
    };
    for (id, fit) in [
        (
            "sf4_fit_2^18_sample",
            &before as &(dyn Fn() -> (TFit, TFit) + Sync),
        ),
        ("sf4_fit_all_values", &full),
    ] {
        g.bench_function(BenchmarkId::new(id, format!("{ROWS}x{COLS}")), |b| {
            b.iter(|| pool.install(|| fitted(fit)))
        });
    }
    g.finish();
}

/// Writes one bf16 safetensors file: 16 expert-shaped matrices, an embedding and norms.
fn write_checkpoint(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(2);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![4096, 1024]),
        ("model.norm.weight".into(), vec![COLS]),
    ];
    for j in 0..16 {
        tensors.push((
            format!("model.layers.1.mlp.experts.{j}.gate_proj.weight"),
            vec![ROWS, COLS],
        ));
    }
    let (mut entries, mut pos) = (Vec::new(), 0u64);
    for (name, shape) in &tensors {
        let len = shape.iter().product::<usize>() as u64 * 2;
        entries.push(OutEntry {
            name: name.clone(),
            dtype: Dtype::BF16,
            shape: shape.clone(),
            begin: pos,
            end: pos + len,
        });
        pos += len;
    }
    let header = serialize_header(&entries, &BTreeMap::new(), 0);
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.join("model.safetensors")).unwrap());
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    for (_, shape) in &tensors {
        for v in weights(&mut rng, shape.iter().product()) {
            f.write_all(&bf16_bits(v).to_le_bytes()).unwrap();
        }
    }
    f.flush().unwrap();
    pos
}

fn checkpoint(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let bytes = write_checkpoint(&input);
    let out = tmp.path().join("out");
    let mut g = c.benchmark_group("convert/checkpoint");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    let o = ConvertOptions::default();
    for threads in [1, 2] {
        let run = RunOptions {
            force: true,
            threads: Some(threads),
        };
        g.bench_function(
            BenchmarkId::new("sf4_fit", format!("{threads}threads/{}MB", bytes >> 20)),
            |b| b.iter(|| tquant_convert::convert(&input, &out, &o, &run, &NoProgress).unwrap()),
        );
    }
    g.finish();
}

criterion_group!(group, tensor, checkpoint);
criterion_main!(group);
