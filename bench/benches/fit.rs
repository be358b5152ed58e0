//! The Student-t fits on one DeepSeek-V2-Lite routed-expert-shaped matrix (1408 x 2048, weight-like
//! Student-t values): on every value (`FitSampling::Full`) against the converter's default sample
//! (`FitSampling::DEFAULT`), for the block-standardised fit (which picks the sf4 table) and the
//! whole-matrix fit. Throughput is in elements of the matrix per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tquant_formats::fit::{fit_block_standardized_with, fit_student_t_with, FitSampling};
use tquant_formats::sample::Rng;

const ROWS: usize = 1408;
const COLS: usize = 2048;

fn benches(c: &mut Criterion) {
    let w: Vec<f32> = Rng::new(1)
        .student_t_vec(ROWS * COLS, 6.0)
        .into_iter()
        .map(|v| v * 0.02)
        .collect();
    let id = format!("{ROWS}x{COLS}");
    for (name, fit) in [
        (
            "block_standardized",
            fit_block_standardized_with as fn(&[f32], usize, FitSampling) -> _,
        ),
        ("whole_matrix", fit_student_t_with),
    ] {
        let mut g = c.benchmark_group(format!("fit/{name}"));
        g.throughput(Throughput::Elements((ROWS * COLS) as u64));
        g.sample_size(10);
        for (sid, sampling) in [
            ("sampled", FitSampling::DEFAULT),
            ("all_values", FitSampling::Full),
        ] {
            g.bench_function(BenchmarkId::new(sid, &id), |b| {
                b.iter(|| fit(black_box(&w), 64, sampling))
            });
        }
        g.finish();
    }
}

criterion_group!(group, benches);
criterion_main!(group);
