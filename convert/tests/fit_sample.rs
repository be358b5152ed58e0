//! The converter's fits run on a sample of each matrix (`FitSampling::DEFAULT`, 2^14 values for
//! the fit that picks the sf4 table, 2^13 for the recorded whole-matrix fit). On real weights
//! (the bundled tiny-lite model's matrices) and a larger synthetic heavy-tailed matrix, the sf4
//! table of the sampled fit's nu stays within a stated tolerance of the table of the fit on
//! every value (figures and method: docs/fit.md).

use std::path::Path;
use tquant_convert::quantize::{fit_for_codebook, fit_for_profile, FIT_SAMPLES};
use tquant_convert::Checkpoint;
use tquant_formats::fit::{fit_block_standardized_with, fit_student_t_with, FitSampling};
use tquant_formats::sample::Rng;
use tquant_formats::Format;

/// Largest difference between the sf4 tables of two nu (values in units of the largest, 1.0).
fn table_diff(a: f64, b: f64) -> f64 {
    let (ta, tb) = (
        Format::student_float(4, a).unwrap(),
        Format::student_float(4, b).unwrap(),
    );
    ta.codebook()
        .values()
        .iter()
        .zip(tb.codebook().values())
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max)
}

/// Tolerances on the table difference (the largest seen in docs/fit.md with some margin; the
/// sf4 table's smallest gap between neighbouring values is about 0.08).
const CODEBOOK_TOL: f64 = 0.01;
const PROFILE_TOL: f64 = 0.04;

fn check(name: &str, x: &[f32], worst: &mut (f64, f64)) {
    let full = fit_block_standardized_with(x, 64, FitSampling::Full);
    let sampled = fit_for_codebook(x, 64);
    let d = table_diff(sampled.nu, full.nu);
    assert!(
        d <= CODEBOOK_TOL,
        "{name}: nu {} vs {} (table {d})",
        sampled.nu,
        full.nu
    );
    let full = fit_student_t_with(x, 64, FitSampling::Full);
    let sampled = fit_for_profile(x, 64);
    let p = table_diff(sampled.nu, full.nu);
    assert!(
        p <= PROFILE_TOL,
        "{name}: whole nu {} vs {} (table {p})",
        sampled.nu,
        full.nu
    );
    // The sampled fit is a function of the values alone (a copy elsewhere in memory, fitted
    // inside a thread pool of another size, gives the same fit).
    let copy = x.to_vec();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    assert_eq!(
        fit_for_codebook(x, 64),
        pool.install(|| fit_for_codebook(&copy, 64))
    );
    worst.0 = worst.0.max(d);
    worst.1 = worst.1.max(p);
}

#[test]
fn sampled_fits_pick_the_table_of_the_full_fit_on_real_weights() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-lite");
    let ck = Checkpoint::open(&dir).unwrap();
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    let mut worst = (0.0, 0.0);
    let mut sampled = 0;
    for name in names {
        let w = ck.get(&name).unwrap();
        // Only matrices the converter actually samples.
        if w.shape().len() == 2 && w.shape().iter().product::<usize>() > FIT_SAMPLES {
            check(&name, &w.to_f32().unwrap(), &mut worst);
            sampled += 1;
        }
    }
    assert!(sampled >= 60, "{sampled} matrices");
    eprintln!(
        "worst table differences: codebook fit {:.4}, whole-matrix fit {:.4}",
        worst.0, worst.1
    );
}

#[test]
fn sampled_fits_pick_the_table_of_the_full_fit_on_a_large_heavy_tailed_matrix() {
    // 1024 x 1024, t(4) values with log-normal row scales, rounded through bf16.
    let mut rng = Rng::new(31);
    let mut x = Vec::with_capacity(1 << 20);
    for _ in 0..1024 {
        let s = (0.5 * rng.normal()).exp();
        x.extend((0..1024).map(|_| {
            let v = (0.02 * s * rng.student_t(4.0)) as f32;
            half::bf16::from_f32(v).to_f32()
        }));
    }
    check("synthetic", &x, &mut (0.0, 0.0));
}
