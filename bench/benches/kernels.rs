//! criterion benches of the dequant-matmul kernels, with their baselines in the same groups.
//!
//! - `gemv/<format>`: one activation row, 4096 x 4096 weights. Throughput is the bytes of
//!   weights each path reads (packed codes + scales for the quantized paths, 4 bytes per weight
//!   for the dense f32 path), so GiB/s compares with memory bandwidth. The weights (9.4 MB
//!   quantized) stay in the last-level cache between iterations; `tquant bench gemv` measures
//!   them cold, from DRAM.
//! - `gemm/<format>`: 32 activation rows, 2048 x 2048 weights. Throughput is elements =
//!   multiply-adds (`rows * cols * batch`).
//!
//! - `gemm-batch/<format>`: fast mode on the detected path against the dense f32 product,
//!   4096 x 4096 weights, batches of 32, 128 and 512 activation rows (prefill): the blocked GEMM
//!   should hold its rate per token as the batch grows. Ids `<isa>-fast/<batch>`, `f32/<batch>`.
//!
//! Ids are `<isa>-<mode>/<rows>x<cols>` (`f32/...` for the dense path on the same weights,
//! `reference-<mode>/...` for the oracle). Threads: rayon's global pool (`RAYON_NUM_THREADS`).
//! Formats: nf4 and e2m1 (a table exact in int8); `TQUANT_BENCH_FORMATS=all` or a comma list
//! for others.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, QuantizedMatrix, ScaleDtype};
use tquant_kernels::{matmul_f32_with, matmul_with, Isa, Mode, QMatrix};

fn formats() -> Vec<Format> {
    match std::env::var("TQUANT_BENCH_FORMATS").ok().as_deref() {
        Some("all") => Format::all(),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("a format name"))
            .collect(),
        None => vec!["nf4".parse().unwrap(), "e2m1".parse().unwrap()],
    }
}

fn quantize(f: &Format, rows: usize, cols: usize) -> (Vec<f32>, QuantizedMatrix) {
    let w: Vec<f32> = Rng::new(1)
        .student_t_vec(rows * cols, 5.0)
        .into_iter()
        .map(|v| v * 0.02)
        .collect();
    let m = BlockQuantizer {
        block: BlockSize::new(32).unwrap(),
        scale_dtype: ScaleDtype::F16,
    }
    .quantize(f.codebook(), &w, rows, cols)
    .unwrap();
    (w, m)
}

fn bench_kind(c: &mut Criterion, kind: &str, rows: usize, cols: usize, n: usize) {
    for f in formats() {
        let (w, m) = quantize(&f, rows, cols);
        let q = QMatrix::from_quantized(&m, f.codebook().values()).unwrap();
        let x = Rng::new(2).normal_vec(n * cols);
        let mut y = vec![0.0f32; n * rows];
        let shape = format!("{rows}x{cols}");
        let qbytes = (m.codes.len() + m.scales.len()) as u64;
        let macs = (rows * cols * n) as u64;
        let throughput = |bytes: u64| {
            if n == 1 {
                Throughput::Bytes(bytes)
            } else {
                Throughput::Elements(macs)
            }
        };
        let mut g = c.benchmark_group(format!("{kind}/{f}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for isa in Isa::available() {
            for mode in Mode::ALL {
                g.throughput(throughput(qbytes));
                let id = BenchmarkId::new(format!("{isa}-{mode}"), &shape);
                g.bench_function(id, |b| {
                    b.iter(|| matmul_with(isa, &q, &x, n, &mut y, mode).unwrap())
                });
            }
        }
        g.throughput(throughput(4 * (rows * cols) as u64));
        g.bench_function(BenchmarkId::new("f32", &shape), |b| {
            b.iter(|| matmul_f32_with(Isa::detect(), &w, rows, cols, &x, n, &mut y).unwrap())
        });
        g.finish();
    }
}

/// Fast-mode GEMM at growing batches, with the f32 product of the same weights per batch.
fn bench_batches(c: &mut Criterion, rows: usize, cols: usize, batches: &[usize]) {
    let isa = Isa::detect();
    for f in formats() {
        let (w, m) = quantize(&f, rows, cols);
        let q = QMatrix::from_quantized(&m, f.codebook().values()).unwrap();
        let mut g = c.benchmark_group(format!("gemm-batch/{f}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for &n in batches {
            let x = Rng::new(2).normal_vec(n * cols);
            let mut y = vec![0.0f32; n * rows];
            g.throughput(Throughput::Elements((rows * cols * n) as u64));
            g.bench_function(BenchmarkId::new(format!("{isa}-fast"), n), |b| {
                b.iter(|| matmul_with(isa, &q, &x, n, &mut y, Mode::Fast).unwrap())
            });
            g.bench_function(BenchmarkId::new("f32", n), |b| {
                b.iter(|| matmul_f32_with(isa, &w, rows, cols, &x, n, &mut y).unwrap())
            });
        }
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    bench_kind(c, "gemv", 4096, 4096, 1);
    bench_kind(c, "gemm", 2048, 2048, 32);
    bench_batches(c, 4096, 4096, &[32, 128, 512]);
}

criterion_group!(group, benches);
criterion_main!(group);
