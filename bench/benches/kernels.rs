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
//! - `gemv-row-tables`: one activation row, 8192 x 8192 nf4 weights in blocks of 32, on the
//!   detected path: a table per row (`learned_row`, each row's values different) against the same
//!   codes and scales with one shared table, ids `<isa>-<mode>-per-row/...` and
//!   `<isa>-<mode>-shared/...` run back to back (`cargo bench --bench kernels -- gemv-row-tables`).
//!
//! Ids are `<isa>-<mode>/<rows>x<cols>` (`f32/...` for the dense path on the same weights,
//! `reference-<mode>/...` for the oracle). Threads: rayon's global pool (`RAYON_NUM_THREADS`).
//! Formats: nf4 and e2m1 (a table exact in int8); `TQUANT_BENCH_FORMATS=all` or a comma list
//! for others.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, QuantizedMatrix, ScaleDtype};
use tquant_kernels::{matmul_f32_with, matmul_with, Isa, Mode, QMatrix, RowTables};

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

/// GEMV with a table per row (`learned_row`) beside the same codes and scales with one shared
/// table, on the detected path, each mode's two cases back to back (per-row tables cost at most
/// 5% over a shared one at 8192 x 8192).
fn bench_row_tables(c: &mut Criterion, rows: usize, cols: usize) {
    let isa = Isa::detect();
    let f: Format = "nf4".parse().unwrap();
    let (_, m) = quantize(&f, rows, cols);
    let t = f.codebook().values();
    let shared = QMatrix::from_quantized(&m, t).unwrap();
    // Every row's table differs: nf4's, its inner values moved by a few percent.
    let mut rng = Rng::new(3);
    let per_row: Vec<f32> = (0..rows)
        .flat_map(|_| {
            let mut row = t.to_vec();
            for v in &mut row[1..15] {
                *v *= 1.0 + 0.05 * (rng.uniform() as f32 - 0.5);
            }
            row
        })
        .collect();
    let tables = RowTables::new(&per_row, 16).unwrap();
    let q = QMatrix::from_quantized_with_row_tables(&m, tables.view()).unwrap();
    let x = Rng::new(2).normal_vec(cols);
    let mut y = vec![0.0f32; rows];
    let shape = format!("{rows}x{cols}");
    let mut g = c.benchmark_group("gemv-row-tables");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes((m.codes.len() + m.scales.len()) as u64));
    for mode in Mode::ALL {
        for (what, view) in [("shared", &shared), ("per-row", &q)] {
            let id = BenchmarkId::new(format!("{isa}-{mode}-{what}"), &shape);
            g.bench_function(id, |b| {
                b.iter(|| matmul_with(isa, view, &x, 1, &mut y, mode).unwrap())
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_row_tables(c, 8192, 8192);
    bench_kind(c, "gemv", 4096, 4096, 1);
    bench_kind(c, "gemm", 2048, 2048, 32);
    bench_batches(c, 4096, 4096, &[32, 128, 512]);
}

criterion_group!(group, benches);
criterion_main!(group);
