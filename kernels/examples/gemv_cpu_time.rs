//! GEMV speed with the weights in cache, in the calling thread's CPU time: what the kernels'
//! instructions cost per byte, apart from DRAM, and robust to other processes sharing the
//! cores (wall time is not). A GEMV that decodes from DRAM only keeps up with the memory stream
//! when this rate is well above the read bandwidth.
//!
//! `cargo run --release -p tquant-kernels --example gemv_cpu_time -- [ROWS] [COLS] [FORMAT]`
//! (defaults 768 2048 nf4; block 32, f16 scales): q8_0 and FORMAT, fast and exact mode, one
//! thread, the best of 24 rounds of 40 products, in GB/s of weights (codes and scales).

mod common;

use common::thread_cpu_time;
use tquant_formats::q8_0::Q8Matrix as Q8Owned;
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
use tquant_kernels::{matmul, matmul_q8_0, Mode, Q8Matrix, QMatrix};

/// One timed product, writing `y`.
type Product<'a> = Box<dyn Fn(&mut [f32]) + Sync + Send + 'a>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: usize = args.first().map_or(768, |s| s.parse().expect("ROWS"));
    let cols: usize = args.get(1).map_or(2048, |s| s.parse().expect("COLS"));
    let format: Format = args.get(2).map_or("nf4", |s| s).parse().expect("FORMAT");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut rng = Rng::new(7);
    let w: Vec<f32> = rng.student_t_vec(rows * cols, 5.0);
    let q8 = Q8Owned::quantize(&w, rows, cols).expect("q8_0");
    let q8v = Q8Matrix::new(rows, cols, &q8.codes, &q8.scales).expect("q8_0 view");
    let quantizer = BlockQuantizer {
        block: BlockSize::new(32).expect("32"),
        scale_dtype: ScaleDtype::F16,
    };
    let m = quantizer
        .quantize(format.codebook(), &w, rows, cols)
        .expect("quantize");
    let qv = QMatrix::from_quantized(&m, format.codebook().values()).expect("view");
    let x = rng.normal_vec(cols);
    let mut y = vec![0.0f32; rows];
    let q8_bytes = q8v.bytes();
    let t_bytes = m.codes.len() + m.scales.len();
    let (rounds, reps) = (24, 40);
    let cases: Vec<(String, usize, Product)> = vec![
        (
            "q8_0 fast".into(),
            q8_bytes,
            Box::new(|y: &mut [f32]| matmul_q8_0(&q8v, &x, 1, y, Mode::Fast).unwrap()),
        ),
        (
            "q8_0 exact".into(),
            q8_bytes,
            Box::new(|y: &mut [f32]| matmul_q8_0(&q8v, &x, 1, y, Mode::Exact).unwrap()),
        ),
        (
            format!("{format} fast"),
            t_bytes,
            Box::new(|y: &mut [f32]| matmul(&qv, &x, 1, y, Mode::Fast).unwrap()),
        ),
        (
            format!("{format} exact"),
            t_bytes,
            Box::new(|y: &mut [f32]| matmul(&qv, &x, 1, y, Mode::Exact).unwrap()),
        ),
    ];
    let mut best = vec![0.0f64; cases.len()];
    pool.install(|| {
        for _ in 0..rounds {
            for (k, (_, bytes, f)) in cases.iter().enumerate() {
                f(&mut y);
                let t0 = thread_cpu_time();
                for _ in 0..reps {
                    f(&mut y);
                }
                let s = (thread_cpu_time() - t0).as_secs_f64();
                best[k] = best[k].max((bytes * reps) as f64 / s / 1e9);
            }
        }
    });
    println!(
        "[{rows} x {cols}], block 32, f16 scales, 1 thread, best of {rounds} x {reps} products"
    );
    for ((name, bytes, _), b) in cases.iter().zip(best) {
        println!(
            "{name:<12} {:>8.1} KB  {b:>6.1} GB/s of weights per CPU second",
            *bytes as f64 / 1e3
        );
    }
}
