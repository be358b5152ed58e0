//! The FP4 scale rules of [`ScaleRule`]: `rceil` (MXFP4) and `4over6` (NVFP4).

use crate::block::{block_sq_err, BlockQuantizer, BlockSize, ScaleRule};
use crate::{Codebook, Format, ScaleDtype};
use proptest::prelude::*;

fn e2m1() -> Codebook {
    "e2m1".parse::<Format>().unwrap().codebook().clone()
}

fn q(block: usize, scale_dtype: ScaleDtype) -> BlockQuantizer {
    BlockQuantizer {
        block: BlockSize::Elements(block),
        scale_dtype,
    }
}

#[test]
fn rceil_rounds_amax_over_six_up_to_a_power_of_two() {
    let (cb, mx) = (e2m1(), q(32, ScaleDtype::E8m0));
    let mut block = [0.25f32; 32];
    // amax 7: 7/6 -> 2 (the floor rule gives 1 and clips 7 to 6).
    block[3] = -7.0;
    assert_eq!(mx.rceil_block_scale(&cb, &block), 2.0);
    assert_eq!(mx.block_scale(&cb, &block), 1.0);
    // amax 6: exactly 1, no round-up; amax 3: 0.5.
    block[3] = 6.0;
    assert_eq!(mx.rceil_block_scale(&cb, &block), 1.0);
    block[3] = 3.0;
    assert_eq!(mx.rceil_block_scale(&cb, &block), 0.5);
    assert_eq!(mx.rceil_block_scale(&cb, &[0.0; 32]), 0.0);
    assert_eq!(mx.scale_for(&cb, &block, ScaleRule::Rceil), 0.5);
}

#[test]
fn four_over_six_takes_four_only_when_it_is_strictly_better() {
    let (cb, nv) = (e2m1(), q(16, ScaleDtype::E4m3));
    // [4, 1, 0...]: the 6 scale is e4m3(4/6) = 0.6875 (4 -> 4.125, 1 -> 1.03125); the 4 scale
    // is 1.0 and stores both exactly.
    let mut block = [0.0f32; 16];
    block[0] = 4.0;
    block[1] = 1.0;
    assert_eq!(nv.block_scale(&cb, &block), 0.6875);
    assert_eq!(nv.four_over_six_block_scale(&cb, &block), 1.0);
    // [6, 1, 0...]: 6 is exact at scale 1; at 1.5, 1 -> 0.75.
    block[0] = 6.0;
    assert_eq!(nv.four_over_six_block_scale(&cb, &block), 1.0);
    assert_eq!(block_sq_err(&cb, &block, 1.5), 0.0625);
    // [6, 3, 0...]: both exact; the tie keeps 6 (scale 1, not 1.5).
    block[1] = 3.0;
    assert_eq!(block_sq_err(&cb, &block, 1.5), 0.0);
    assert_eq!(nv.four_over_six_block_scale(&cb, &block), 1.0);
    assert_eq!(nv.scale_for(&cb, &[0.0; 16], ScaleRule::FourOverSix), 0.0);
}

#[test]
fn fp4_rule_names_round_trip() {
    for rule in ScaleRule::ALL.into_iter().chain(ScaleRule::FP4) {
        assert_eq!(rule.to_string().parse::<ScaleRule>().unwrap(), rule);
    }
    assert_eq!(
        "4over6".parse::<ScaleRule>().unwrap(),
        ScaleRule::FourOverSix
    );
    assert!("ceil".parse::<ScaleRule>().is_err());
}

proptest! {
    #[test]
    fn rceil_never_saturates_and_is_the_least_such_power_of_two(
        block in proptest::collection::vec(-1e4f32..1e4, 32),
        shift in -40i32..40,
    ) {
        let (cb, mx) = (e2m1(), q(32, ScaleDtype::E8m0));
        let block: Vec<f32> = block.iter().map(|v| v * 2f32.powi(shift)).collect();
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = mx.rceil_block_scale(&cb, &block);
        prop_assume!(amax > 0.0);
        prop_assert!(amax / s <= 6.0, "amax {amax} scale {s}");
        prop_assert!(amax / (s / 2.0) > 6.0, "amax {amax} scale {s}");
        let codes = mx.quantize_with(&cb, &block, 1, 32, ScaleRule::Rceil).unwrap();
        prop_assert_eq!(codes.scales[0], (s.log2() as i32 + 127) as u8);
    }

    #[test]
    fn four_over_six_is_never_worse_than_either_fixed_choice(
        block in proptest::collection::vec(-1.0f32..1.0, 16),
    ) {
        let (cb, nv) = (e2m1(), q(16, ScaleDtype::E4m3));
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let six = ScaleDtype::E4m3.round(amax / 6.0);
        let four = ScaleDtype::E4m3.round(amax / 4.0);
        let s = nv.four_over_six_block_scale(&cb, &block);
        prop_assert!(s == six || s == four);
        let e = block_sq_err(&cb, &block, s);
        prop_assert!(e <= block_sq_err(&cb, &block, six));
        prop_assert!(e <= block_sq_err(&cb, &block, four));
    }
}
