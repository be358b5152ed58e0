//! `ScaleRule::Search` (sorted block, closed-form screening) against the reference that encodes
//! every candidate: the same scale, bit for bit, on every catalog format and scale dtype.

use proptest::prelude::*;
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};

fn quantizer(d: ScaleDtype) -> BlockQuantizer {
    BlockQuantizer {
        block: BlockSize::Elements(64),
        scale_dtype: d,
    }
}

/// Blocks of the kinds that stress the search: smooth, heavy-tailed, pruned, constant, tiny,
/// huge, and blocks built from table values times a scale (exact ties at the thresholds).
fn blocks(cb_values: &[f32]) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(17);
    let mut out = Vec::new();
    for len in [16usize, 37, 64, 128, 1000] {
        for _ in 0..6 {
            out.push(rng.normal_vec(len));
            out.push(rng.student_t_vec(len, 2.5));
            out.push(
                rng.student_t_vec(len, 4.0)
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| if i % 3 == 0 { 0.0 } else { v })
                    .collect(),
            );
            let s = (rng.uniform() * 2.0 + 0.1) as f32;
            out.push(
                (0..len)
                    .map(|_| cb_values[rng.below(cb_values.len() as u64) as usize] * s)
                    .collect(),
            );
            // Midpoints of neighbouring table values times a scale: ties at thresholds.
            out.push(
                (0..len)
                    .map(|_| {
                        let k = rng.below(cb_values.len() as u64 - 1) as usize;
                        0.5 * (cb_values[k] + cb_values[k + 1]) * s
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

#[test]
fn search_matches_the_reference_on_every_format_and_dtype() {
    for f in Format::all() {
        let cb = f.codebook();
        let mut sorted = cb.values().to_vec();
        sorted.sort_by(f32::total_cmp);
        let data = blocks(&sorted);
        for d in ScaleDtype::ALL {
            let q = quantizer(d);
            if q.check(cb).is_err() {
                continue;
            }
            for (i, b) in data.iter().enumerate() {
                let fast = q.searched_block_scale(cb, b);
                let oracle = q.searched_block_scale_reference(cb, b);
                assert_eq!(fast.to_bits(), oracle.to_bits(), "{f} {d} block {i}: {b:?}");
            }
        }
    }
}

#[test]
fn non_finite_elements_take_the_reference_path() {
    let nf4: Format = "nf4".parse().unwrap();
    let cb = nf4.codebook();
    let q = quantizer(ScaleDtype::F16);
    let mut b = Rng::new(3).normal_vec(64);
    b[5] = f32::NAN;
    b[9] = f32::INFINITY;
    assert_eq!(
        q.searched_block_scale(cb, &b).to_bits(),
        q.searched_block_scale_reference(cb, &b).to_bits()
    );
}

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -4.0f32..4.0,
        1 => any::<u32>().prop_map(f32::from_bits).prop_filter("finite", |v| v.is_finite()),
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (-8i32..8).prop_map(|k| k as f32 * 0.125),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_block_gets_the_reference_scale(
        b in proptest::collection::vec(any_f32(), 1..200),
        fi in 0usize..1000,
        di in 0usize..4,
    ) {
        let all = Format::all();
        let f = &all[fi % all.len()];
        let q = quantizer(ScaleDtype::ALL[di]);
        if q.check(f.codebook()).is_ok() {
            let fast = q.searched_block_scale(f.codebook(), &b);
            let oracle = q.searched_block_scale_reference(f.codebook(), &b);
            prop_assert_eq!(fast.to_bits(), oracle.to_bits(), "{} {}", f, ScaleDtype::ALL[di]);
        }
    }
}
