//! How the Student-t fit converges with the size of its sample: for each matrix, the fit on every
//! value against fits on `FitSampling::Blocks` samples of 2^12..2^20 values under several seeds.
//! Prints markdown tables (the figures of `docs/fit.md`).
//!
//! `cargo run --release -p tquant-bench --example fit_convergence [CHECKPOINT_DIR]`
//! (default: the bundled `examples/tiny-lite`).

use std::time::Instant;
use tquant_convert::Checkpoint;
use tquant_formats::fit::{fit_block_standardized_with, fit_student_t_with, FitSampling};
use tquant_formats::sample::Rng;
use tquant_formats::Format;

const BLOCK: usize = 64;
const SEEDS: u64 = 5;

fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(((b + 0x7fff + ((b >> 16) & 1)) >> 16) << 16)
}

/// Synthetic 2048 x 2048 matrices with the heavy tails real weights have.
fn synthetic() -> Vec<(String, Vec<f32>)> {
    let (rows, cols) = (2048usize, 2048usize);
    let mut rng = Rng::new(7);
    let t6: Vec<f32> = rng.student_t_vec(rows * cols, 6.0);
    let mut row_scaled = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let s = (0.5 * rng.normal()).exp();
        row_scaled.extend((0..cols).map(|_| (s * rng.student_t(4.0)) as f32));
    }
    let outlier_cols: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let s = if (i % cols) % 97 == 0 { 8.0 } else { 1.0 };
            (s * rng.normal()) as f32
        })
        .collect();
    let t3: Vec<f32> = rng.student_t_vec(rows * cols, 3.0);
    [
        ("synthetic t(6)", t6),
        ("synthetic t(4) x lognormal row scales", row_scaled),
        ("synthetic normal, 1% of columns x8", outlier_cols),
        ("synthetic t(3)", t3),
    ]
    .into_iter()
    .map(|(n, v)| {
        (
            n.to_string(),
            v.into_iter().map(|x| bf16_round(x * 0.02)).collect(),
        )
    })
    .collect()
}

fn real(dir: &str) -> Vec<(String, Vec<f32>)> {
    let ck = Checkpoint::open(dir).expect("checkpoint");
    let mut out = Vec::new();
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    for name in names {
        let w = ck.get(&name).expect("tensor");
        if w.shape().len() == 2 && w.shape().iter().product::<usize>() >= 1 << 14 {
            out.push((name, w.to_f32().expect("values")));
        }
    }
    out
}

type Fit = fn(&[f32], usize, FitSampling) -> tquant_formats::TFit;

/// Largest difference between the sf4 tables of two nu (values in units of the table's largest).
fn table_diff(a: f64, b: f64) -> f64 {
    let ta = Format::student_float(4, a).expect("nu in range");
    let tb = Format::student_float(4, b).expect("nu in range");
    ta.codebook()
        .values()
        .iter()
        .zip(tb.codebook().values())
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

fn table(title: &str, fit: Fit, tensors: &[(String, Vec<f32>)], per_tensor: bool) {
    let sizes: Vec<usize> = (12..=20).map(|k| 1usize << k).collect();
    println!("\n### {title}\n");
    print!("| matrix | values | nu (all) | ms (all) |");
    for s in &sizes {
        print!(" 2^{} |", s.trailing_zeros());
    }
    println!();
    print!("|---|---|---|---|");
    for _ in &sizes {
        print!("---|");
    }
    println!();
    let mut worst_table = vec![0.0f64; sizes.len()];
    let mut worst_nu = vec![0.0f64; sizes.len()];
    let mut ms = vec![(0.0f64, 0usize); sizes.len()];
    for (name, x) in tensors {
        let t = Instant::now();
        let full = fit(x, BLOCK, FitSampling::Full);
        let ms_all = t.elapsed().as_secs_f64() * 1e3;
        if per_tensor {
            print!("| {name} | {} | {:.3} | {ms_all:.0} |", x.len(), full.nu);
        }
        for (k, &values) in sizes.iter().enumerate() {
            if values >= x.len() {
                if per_tensor {
                    print!(" = |");
                }
                continue;
            }
            let (mut d_table, mut d_nu) = (0.0f64, 0.0f64);
            for seed in 1..=SEEDS {
                let t = Instant::now();
                let f = fit(x, BLOCK, FitSampling::Blocks { values, seed });
                ms[k].0 += t.elapsed().as_secs_f64() * 1e3;
                ms[k].1 += 1;
                d_table = d_table.max(table_diff(f.nu, full.nu));
                // Relative error of nu where the tail is heavy enough for nu to matter.
                if full.nu < 30.0 {
                    d_nu = d_nu.max((f.nu - full.nu).abs() / full.nu);
                }
            }
            worst_table[k] = worst_table[k].max(d_table);
            worst_nu[k] = worst_nu[k].max(d_nu);
            if per_tensor {
                print!(" {d_table:.4} |");
            }
        }
        if per_tensor {
            println!();
        }
    }
    print!("| **worst sf4 table difference** | | | |");
    for w in &worst_table {
        print!(" **{w:.4}** |");
    }
    println!();
    print!("| **worst nu error (nu < 30)** | | | |");
    for w in &worst_nu {
        print!(" {:.1}% |", 100.0 * w);
    }
    println!();
    print!("| **mean ms per sampled fit** | | | |");
    for &(t, n) in &ms {
        print!(" {:.1} |", t / n.max(1) as f64);
    }
    println!();
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tiny-lite").into());
    let mut tensors = real(&dir);
    tensors.extend(synthetic());
    println!(
        "Cells: largest difference between the sf4 table of the sampled fit's nu and of the fit \
         on every value (table values in units of the largest, 1.0), over {SEEDS} seeds; blocks \
         of {BLOCK}. `=`: the sample would be the whole matrix."
    );
    table(
        "Block-standardised fit (picks the codebook)",
        fit_block_standardized_with,
        &tensors,
        true,
    );
    table(
        "Whole-tensor fit (recorded profile)",
        fit_student_t_with,
        &tensors,
        false,
    );
}
