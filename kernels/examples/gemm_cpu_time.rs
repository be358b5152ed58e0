//! Fast-mode GEMM speed in the calling thread's CPU time, robust to other processes sharing
//! the cores (wall time is not): the blocked GEMM's rate per batch, and whether a large batch
//! costs no more per token than a small one.
//!
//! `cargo run --release -p tquant-kernels --example gemm_cpu_time -- [ROWS] [COLS] [BLOCK]`
//! (defaults 4096 4096 32; nf4, f16 scales): batches 32, 128 and 512, one thread, the best of
//! 5 rounds, in GFLOP/s (2 per multiply-add) and microseconds per activation row.

mod common;

use common::thread_cpu_time;
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
use tquant_kernels::{matmul, Mode, QMatrix};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: usize = args.first().map_or(4096, |s| s.parse().expect("ROWS"));
    let cols: usize = args.get(1).map_or(4096, |s| s.parse().expect("COLS"));
    let block: usize = args.get(2).map_or(32, |s| s.parse().expect("BLOCK"));
    let format: Format = "nf4".parse().expect("nf4");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut rng = Rng::new(7);
    let w: Vec<f32> = rng.student_t_vec(rows * cols, 5.0);
    let quantizer = BlockQuantizer {
        block: BlockSize::new(block).expect("BLOCK"),
        scale_dtype: ScaleDtype::F16,
    };
    let m = quantizer
        .quantize(format.codebook(), &w, rows, cols)
        .expect("quantize");
    let qv = QMatrix::from_quantized(&m, format.codebook().values()).expect("view");
    println!("[{rows} x {cols}] nf4, block {block}, f16 scales, fast mode, 1 thread, best of 5");
    for batch in [32, 128, 512] {
        let x = rng.normal_vec(batch * cols);
        let mut y = vec![0.0f32; batch * rows];
        let reps = (2048 / batch).max(1);
        let mut best = f64::INFINITY;
        pool.install(|| {
            matmul(&qv, &x, batch, &mut y, Mode::Fast).unwrap();
            for _ in 0..5 {
                let t0 = thread_cpu_time();
                for _ in 0..reps {
                    matmul(&qv, &x, batch, &mut y, Mode::Fast).unwrap();
                }
                best = best.min((thread_cpu_time() - t0).as_secs_f64() / reps as f64);
            }
        });
        let flops = 2.0 * (rows * cols * batch) as f64;
        println!(
            "batch {batch:>4}  {:>7.1} GFLOP/s  {:>7.1} us per row",
            flops / best / 1e9,
            best / batch as f64 * 1e6
        );
    }
}
