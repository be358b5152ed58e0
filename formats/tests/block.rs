//! Block scaling: scale dtypes, tail blocks, whole-row blocks, zeros, subnormals, non-finite
//! inputs, signed scales for one-sided tables, and the scale search.

use tquant_formats::block::{block_sq_err, blocks_per_row, ScaleRule};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Codebook, Format, FormatError, ScaleDtype};

fn q(block: BlockSize, scale_dtype: ScaleDtype) -> BlockQuantizer {
    BlockQuantizer { block, scale_dtype }
}

/// Largest distance between neighbouring table values: twice the worst rounding error.
fn max_gap(cb: &Codebook) -> f32 {
    cb.sorted()
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0.0, f32::max)
}

fn four_bit() -> Vec<Format> {
    Format::all()
        .into_iter()
        .filter(|f| f.bits() == 4)
        .collect()
}

#[test]
fn every_element_is_within_half_a_gap_of_its_value() {
    let w = Rng::new(1).student_t_vec(8 * 300, 4.0);
    for f in Format::all() {
        let cb = f.codebook();
        for d in [ScaleDtype::F32, ScaleDtype::F16, ScaleDtype::Bf16] {
            let m = q(BlockSize::Elements(64), d)
                .quantize(cb, &w, 8, 300)
                .unwrap();
            assert_eq!(m.scales.len(), 8 * 5 * d.size());
            let deq = m.dequantize(cb);
            for (i, (&x, &y)) in w.iter().zip(&deq).enumerate() {
                let (r, c) = (i / 300, i % 300);
                let s = m.scale(r, c / 64);
                let chunk =
                    &w[r * 300 + c / 64 * 64..(r * 300 + (c / 64 + 1) * 64).min((r + 1) * 300)];
                assert_eq!(
                    s,
                    q(BlockSize::Elements(64), d).block_scale(cb, chunk),
                    "{f} {d}"
                );
                // Beyond the table's reach on its side (a rounded scale's overshoot, or the short
                // side of a one-sided table), the error is the clipping distance.
                let y_ideal = x / s;
                let reach = cb.values().iter().fold(0.0f32, |m, &v| {
                    if v.signum() == y_ideal.signum() {
                        m.max(v.abs())
                    } else {
                        m
                    }
                });
                let overshoot = (y_ideal.abs() - reach).max(0.0) * s.abs();
                let bound = 0.5 * max_gap(cb) * s.abs() * 1.0001 + overshoot * 1.0001;
                assert!((x - y).abs() <= bound, "{f} {d}: {x} -> {y}, bound {bound}");
            }
        }
    }
}

#[test]
fn dequantize_is_code_value_times_block_scale() {
    use tquant_formats::pack::code_at;
    let w = Rng::new(11).normal_vec(3 * 77);
    let cb = "sf3".parse::<Format>().unwrap();
    let cb = cb.codebook();
    for block in [
        BlockSize::Elements(16),
        BlockSize::Elements(50),
        BlockSize::Row,
    ] {
        let mut m = q(block, ScaleDtype::F16).quantize(cb, &w, 3, 77).unwrap();
        // Also an odd block length, as a hand-made matrix may carry (bytes then straddle blocks).
        for odd in [false, true] {
            if odd {
                m.block = 25;
                let nb = m.rows * m.blocks_per_row();
                m.scales = (0..nb).flat_map(|i| half_bytes(0.5 + i as f32)).collect();
            }
            let rb = m.codes.len() / 3;
            let deq = m.dequantize(cb);
            for r in 0..3 {
                for c in 0..77 {
                    let want = cb.decode(code_at(&m.codes[r * rb..], c)) * m.scale(r, c / m.block);
                    assert_eq!(deq[r * 77 + c], want, "{block} odd={odd} [{r}, {c}]");
                }
            }
        }
    }
}

fn half_bytes(v: f32) -> [u8; 2] {
    let mut out = Vec::new();
    ScaleDtype::F16.push_bytes(v, &mut out);
    [out[0], out[1]]
}

#[test]
fn e8m0_scales_follow_ocp_mx() {
    let cb = "e2m1".parse::<Format>().unwrap();
    let w = Rng::new(2).normal_vec(32 * 40);
    let qz = q(BlockSize::Elements(32), ScaleDtype::E8m0);
    let m = qz.quantize(cb.codebook(), &w, 40, 32).unwrap();
    assert_eq!(m.scales.len(), 40);
    for (r, row) in w.chunks(32).enumerate() {
        let amax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        // X = 2^(floor(log2(amax)) - emax), emax = 2 for E2M1.
        let want = 2f32.powi(amax.log2().floor() as i32 - 2);
        assert_eq!(m.scale(r, 0), want);
        assert_eq!(m.scales[r] as i32 - 127, amax.log2().floor() as i32 - 2);
    }
}

#[test]
fn tail_blocks_are_scaled_on_their_own() {
    let cols = 100; // blocks of 32: 32, 32, 32 and a tail of 4
    let mut w = Rng::new(3).normal_vec(2 * cols);
    w[cols - 2] = 0.01; // tail of row 0: small values only
    w[cols - 1] = -0.02;
    w[cols - 3] = 0.005;
    w[cols - 4] = 0.0;
    let cb = "nf4".parse::<Format>().unwrap();
    let m = q(BlockSize::Elements(32), ScaleDtype::F32)
        .quantize(cb.codebook(), &w, 2, cols)
        .unwrap();
    assert_eq!(blocks_per_row(cols, 32), 4);
    assert_eq!(m.blocks_per_row(), 4);
    assert_eq!(m.scales.len(), 2 * 4 * 4);
    assert_eq!(m.codes.len(), 2 * 50);
    assert_eq!(m.scale(0, 3), 0.02);
    let deq = m.dequantize(cb.codebook());
    assert_eq!(deq[cols - 1], -0.02, "the tail's extreme is exact");
    // Odd row lengths pad each row's last byte.
    let m = q(BlockSize::Elements(16), ScaleDtype::F16)
        .quantize(cb.codebook(), &w[..2 * 33], 2, 33)
        .unwrap();
    assert_eq!(m.codes.len(), 2 * 17);
    assert_eq!(m.codes[16] >> 4, 0);
    assert_eq!(m.blocks_per_row(), 3);
}

#[test]
fn whole_row_blocks_take_one_scale_per_row() {
    let w = Rng::new(4).normal_vec(3 * 5000);
    for f in four_bit() {
        let m = q(BlockSize::Row, ScaleDtype::Bf16)
            .quantize(f.codebook(), &w, 3, 5000)
            .unwrap();
        assert_eq!((m.block, m.blocks_per_row()), (5000, 1));
        assert_eq!(m.scales.len(), 3 * 2);
    }
    // A zero-length row is a valid empty matrix.
    let cb = "int4".parse::<Format>().unwrap();
    let m = q(BlockSize::Row, ScaleDtype::F32)
        .quantize(cb.codebook(), &[], 4, 0)
        .unwrap();
    assert!(m.codes.is_empty() && m.scales.is_empty());
}

#[test]
fn an_all_zero_block_dequantizes_to_zeros() {
    let mut w = Rng::new(5).normal_vec(4 * 64);
    w[64..128].fill(0.0);
    w[128..192].iter_mut().for_each(|v| *v = -0.0);
    for f in Format::all() {
        for d in ScaleDtype::ALL {
            let qz = q(BlockSize::Elements(64), d);
            if qz.check(f.codebook()).is_err() {
                continue;
            }
            for rule in ScaleRule::ALL {
                let m = qz.quantize_with(f.codebook(), &w, 4, 64, rule).unwrap();
                let deq = m.dequantize(f.codebook());
                assert!(deq.iter().all(|v| v.is_finite()), "{f} {d} {rule}");
                assert!(deq[64..192].iter().all(|&v| v == 0.0), "{f} {d} {rule}");
                // E8M0 has no zero: its smallest scale stands in, times the zero code.
                let zero_scale = if d == ScaleDtype::E8m0 {
                    2f32.powi(-127)
                } else {
                    0.0
                };
                assert_eq!(m.scale(1, 0), zero_scale, "{f} {d} {rule}");
            }
        }
    }
}

#[test]
fn subnormal_inputs_quantize_like_normal_ones() {
    let base = Rng::new(6).normal_vec(64);
    let tiny: Vec<f32> = base.iter().map(|v| v * 1e-39).collect();
    assert!(tiny.iter().any(|v| v.is_subnormal()));
    for f in Format::all() {
        let cb = f.codebook();
        let m = q(BlockSize::Elements(64), ScaleDtype::F32)
            .quantize(cb, &tiny, 1, 64)
            .unwrap();
        let s = m.scale(0, 0);
        assert!(s != 0.0 && s.is_finite(), "{f}: scale {s}");
        let deq = m.dequantize(cb);
        for (&x, &y) in tiny.iter().zip(&deq) {
            // A subnormal scale keeps fewer bits: allow a few units of the smallest subnormal.
            let bound = 0.5 * max_gap(cb) * s.abs() * 1.01 + 64.0 * f32::from_bits(1);
            assert!((x - y).abs() <= bound, "{f}: {x:e} -> {y:e}");
            assert!(
                y.is_finite() && (y == 0.0 || y.signum() == x.signum()),
                "{f}"
            );
        }
    }
}

#[test]
fn non_finite_elements_do_not_spoil_their_block() {
    let cb = "e2m1".parse::<Format>().unwrap();
    let cb = cb.codebook();
    let w = [
        1.0f32,
        f32::NAN,
        -3.0,
        f32::INFINITY,
        0.5,
        f32::NEG_INFINITY,
        6.0,
        0.0,
    ];
    let m = q(BlockSize::Row, ScaleDtype::F32)
        .quantize(cb, &w, 1, 8)
        .unwrap();
    assert_eq!(m.scale(0, 0), 1.0);
    let deq = m.dequantize(cb);
    assert_eq!(deq, [1.0, 0.0, -3.0, 6.0, 0.5, -6.0, 6.0, 0.0]);
}

#[test]
fn one_sided_tables_get_signed_scales() {
    let full = "int4_full".parse::<Format>().unwrap();
    let cb = full.codebook();
    assert!(cb.needs_signed_scale() && cb.extreme() == -8.0);
    let qz = q(BlockSize::Elements(16), ScaleDtype::F32);
    // Positive extreme: the scale flips so that it maps onto -8 (the paper's full-range rule).
    let pos: Vec<f32> = (0..16).map(|i| i as f32 * 0.2 - 1.0).collect(); // -1 .. 2
    assert_eq!(qz.block_scale(cb, &pos), 2.0 / -8.0);
    // Negative extreme: a positive scale maps it onto -8.
    let neg: Vec<f32> = pos.iter().map(|v| -v).collect();
    assert_eq!(qz.block_scale(cb, &neg), 2.0 / 8.0);
    for w in [&pos, &neg] {
        let m = qz.quantize(cb, w, 1, 16).unwrap();
        let deq = m.dequantize(cb);
        let i = w.iter().position(|v| v.abs() == 2.0).unwrap();
        assert_eq!(deq[i], w[i], "the extreme is exact");
    }
    // E2M1+SR: +8 has no -8, so negative extremes flip the scale.
    let sr = "e2m1_sr".parse::<Format>().unwrap();
    assert!(sr.codebook().needs_signed_scale());
    assert_eq!(qz.block_scale(sr.codebook(), &neg), -0.25);
    // Tables with both signs at the extreme keep positive scales.
    for name in ["nf4", "sf4", "int4", "e2m1", "e2m1_sp", "apot4_sp", "e3m0"] {
        let f: Format = name.parse().unwrap();
        assert!(!f.codebook().needs_signed_scale(), "{name}");
        assert!(qz.block_scale(f.codebook(), &pos) > 0.0, "{name}");
        assert!(qz.block_scale(f.codebook(), &neg) > 0.0, "{name}");
    }
    // E8M0 has no sign bit: a clear error instead of clipping half of every block.
    let e = q(BlockSize::Elements(32), ScaleDtype::E8m0).quantize(cb, &[0.0; 32], 1, 32);
    match e {
        Err(e @ FormatError::SignedScale { .. }) => {
            assert!(e.to_string().contains("e8m0"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn scale_search_is_deterministic_and_never_worse() {
    let w = Rng::new(8).student_t_vec(64 * 50, 5.0);
    for f in Format::all() {
        let cb = f.codebook();
        for d in ScaleDtype::ALL {
            let qz = q(BlockSize::Elements(64), d);
            if qz.check(cb).is_err() {
                continue;
            }
            let a = qz.quantize_with(cb, &w, 50, 64, ScaleRule::Search).unwrap();
            let b = qz.quantize_with(cb, &w, 50, 64, ScaleRule::Search).unwrap();
            assert_eq!(a, b, "{f} {d}");
            let base = qz.quantize(cb, &w, 50, 64).unwrap();
            for (r, row) in w.chunks(64).enumerate() {
                let (sa, sb) = (a.scale(r, 0), base.scale(r, 0));
                assert_eq!(qz.searched_block_scale(cb, row), sa);
                assert_eq!(d.round(sa), sa, "{f} {d}: stored exactly");
                assert!(
                    block_sq_err(cb, row, sa) <= block_sq_err(cb, row, sb),
                    "{f} {d} row {r}"
                );
            }
        }
    }
}

#[test]
fn scale_search_repairs_e8m0_for_power_of_two_tables() {
    // NF4's largest value is 1.0: OCP's floor rule leaves blocks up to 2x past the table.
    let w = Rng::new(9).normal_vec(32 * 2000);
    let cb = "nf4".parse::<Format>().unwrap();
    let err = |d, rule| {
        let m = q(BlockSize::Elements(32), d)
            .quantize_with(cb.codebook(), &w, 2000, 32, rule)
            .unwrap();
        let deq = m.dequantize(cb.codebook());
        w.iter()
            .zip(&deq)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    let floor = err(ScaleDtype::E8m0, ScaleRule::Absmax);
    let searched = err(ScaleDtype::E8m0, ScaleRule::Search);
    let f32_absmax = err(ScaleDtype::F32, ScaleRule::Absmax);
    assert!(searched < 0.5 * floor, "{searched} vs {floor}");
    assert!(searched < 1.5 * f32_absmax, "{searched} vs {f32_absmax}");
}

#[test]
fn shape_mismatch_is_an_error() {
    let cb = "nf4".parse::<Format>().unwrap();
    let e = q(BlockSize::Elements(32), ScaleDtype::F32).quantize(cb.codebook(), &[0.0; 10], 3, 4);
    assert!(matches!(e, Err(FormatError::MatrixLength { .. })), "{e:?}");
    let e = q(BlockSize::Elements(32), ScaleDtype::F32).quantize(cb.codebook(), &[], usize::MAX, 2);
    assert!(matches!(e, Err(FormatError::MatrixLength { .. })), "{e:?}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn element() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => -10.0f32..10.0,
            1 => Just(0.0f32),
            1 => Just(-0.0f32),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
        ]
    }

    proptest! {
        #[test]
        fn block_scale_follows_the_rule(block in proptest::collection::vec(element(), 1..80)) {
            // The rule, one element at a time: the finite element of largest magnitude,
            // the positive one on ties.
            let mut extreme = 0.0f32;
            for &v in block.iter().filter(|v| v.is_finite()) {
                if v.abs() > extreme.abs() || (v.abs() == extreme.abs() && v > extreme) {
                    extreme = v;
                }
            }
            let qz = q(BlockSize::Elements(16), ScaleDtype::F32);
            let full: Format = "int4_full".parse().unwrap();
            let nf4: Format = "nf4".parse().unwrap();
            let want_signed = if extreme == 0.0 { 0.0 } else { extreme / -8.0 };
            prop_assert_eq!(qz.block_scale(full.codebook(), &block), want_signed);
            prop_assert_eq!(qz.block_scale(nf4.codebook(), &block), extreme.abs());
        }
    }
}
