//! The candidate-scale screen on one path: the scale `ScaleRule::Search` picks through it is
//! the reference's, bit for bit, on every format and scale dtype; its f32 errors are within
//! the tolerance of the exact ones; a ragged matrix quantizes byte for byte as on the portable
//! path.

use tquant_formats::block::block_sq_err;
use tquant_formats::sample::Rng;
use tquant_formats::screen::{screen_tolerance, Screen, ScreenJob, ScreenTable};
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype, ScaleRule};
use tquant_kernels::{Isa, ScaleScreen};

fn quantizer(block: usize, d: ScaleDtype) -> BlockQuantizer {
    BlockQuantizer {
        block: BlockSize::Elements(block),
        scale_dtype: d,
    }
}

/// Blocks that stress the screen: smooth, heavy-tailed, pruned, table values times a scale,
/// midpoints (exact ties), constant, tiny and huge, at lengths off the vector width.
fn blocks(sorted: &[f32], rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for len in [16usize, 37, 64, 100, 129] {
        for _ in 0..4 {
            out.push(rng.normal_vec(len));
            out.push(rng.student_t_vec(len, 2.5));
            out.push(
                rng.student_t_vec(len, 4.0)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| if i % 3 == 0 { 0.0 } else { v * 1e-3 })
                    .collect(),
            );
            let s = (rng.uniform() * 2.0 + 0.1) as f32;
            out.push(
                (0..len)
                    .map(|_| sorted[rng.below(sorted.len() as u64) as usize] * s)
                    .collect(),
            );
            out.push(
                (0..len)
                    .map(|_| {
                        let k = rng.below(sorted.len() as u64 - 1) as usize;
                        0.5 * (sorted[k] + sorted[k + 1]) * s
                    })
                    .collect(),
            );
        }
        out.push(vec![0.75; len]);
        out.push(vec![-1e-3; len]);
        out.push(rng.normal_vec(len).iter().map(|v| v * 1e-41).collect());
        out.push(rng.normal_vec(len).iter().map(|v| v * 1e36).collect());
    }
    out
}

pub fn screen_matches_reference(isa: Isa) {
    let screen = ScaleScreen::new(isa).unwrap();
    let mut rng = Rng::new(23);
    for f in Format::all() {
        let cb = f.codebook();
        let mut sorted = cb.values().to_vec();
        sorted.sort_by(f32::total_cmp);
        let data = blocks(&sorted, &mut rng);
        for d in ScaleDtype::ALL {
            let q = quantizer(64, d);
            if q.check(cb).is_err() {
                continue;
            }
            for (i, b) in data.iter().enumerate() {
                let got = q.searched_block_scale_with(cb, b, &screen);
                let want = q.searched_block_scale_reference(cb, b);
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{isa} {f} {d} block {i}: {b:?}"
                );
            }
        }
    }
}

pub fn screen_errors_are_within_tolerance(isa: Isa) {
    let screen = ScaleScreen::new(isa).unwrap();
    let mut rng = Rng::new(29);
    for f in Format::all() {
        let cb = f.codebook();
        let table = ScreenTable::new(cb.sorted(), cb.thresholds()).unwrap();
        let mut sorted = cb.values().to_vec();
        sorted.sort_by(f32::total_cmp);
        for b in blocks(&sorted, &mut rng) {
            let absmax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let mags: Vec<f32> = (70..=110)
                .map(|p| absmax / cb.max_abs() * (p as f32 / 100.0))
                .collect();
            if !table.accepts(absmax, &mags) {
                continue;
            }
            let negate = [false, true];
            let mut out = vec![0.0f32; 2 * mags.len()];
            let job = ScreenJob {
                block: &b,
                table: &table,
                mags: &mags,
                negate: &negate,
            };
            screen.screen(&job, &mut out);
            for (s, &neg) in negate.iter().enumerate() {
                for (i, &a) in mags.iter().enumerate() {
                    let e = out[s * mags.len() + i];
                    let exact = block_sq_err(cb, &b, if neg { -a } else { a });
                    assert!(
                        (e as f64 - exact).abs() <= screen_tolerance(b.len(), e),
                        "{isa} {f} a {a} negated {neg}: screened {e}, exact {exact}"
                    );
                }
            }
        }
    }
}

pub fn screened_matrix_matches_portable(isa: Isa) {
    let screen = ScaleScreen::new(isa).unwrap();
    let mut rng = Rng::new(31);
    // 100 columns: a whole block of 64 and a short one of 36 per row; block 48: 3 blocks, the
    // last of 4.
    for (rows, cols, block) in [(5, 100, 64), (3, 100, 48), (2, 1000, 1000)] {
        let w = rng.student_t_vec(rows * cols, 5.0);
        for f in Format::all() {
            for d in [
                ScaleDtype::F32,
                ScaleDtype::F16,
                ScaleDtype::Bf16,
                ScaleDtype::E4m3,
            ] {
                let q = quantizer(block, d);
                let cb = f.codebook();
                let a = q
                    .quantize_with_screen(cb, &w, rows, cols, ScaleRule::Search, &screen)
                    .unwrap();
                let b = q
                    .quantize_with(cb, &w, rows, cols, ScaleRule::Search)
                    .unwrap();
                assert_eq!(a, b, "{isa} {f} {d} {rows}x{cols} block {block}");
            }
        }
    }
}
