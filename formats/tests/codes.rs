//! Exhaustive and property tests of codes: decoding, nearest-value encoding with the tie rule,
//! every threshold at +-1 ulp, and tquant's nibble packing.

use proptest::prelude::*;
use tquant_formats::pack::{code_at, pack_row, row_bytes, unpack_row};
use tquant_formats::{Codebook, Format};

/// Every catalog format plus a generated SF4, an SF3 and two custom tables (one with duplicates).
fn formats() -> Vec<Format> {
    let mut v = Format::all();
    for extra in [
        "sf4:nu=2.5",
        "sf3:nu=1.5",
        "custom:-3,-1,0,0.1,0.2,0.3,1,7",
        "custom:0,1,1,2",
    ] {
        v.push(extra.parse().unwrap());
    }
    v
}

fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() + 1)
    } else {
        f32::from_bits(x.to_bits() - 1)
    }
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// The specification, by brute force: `v` is nearest `x` when no other value is strictly nearer,
/// i.e. `x` is on `v`'s side of (or on) the exact midpoint with every other value (f64 holds the
/// midpoint of two f32 exactly, and the comparison is exact; a difference `x - v` would not be for
/// huge `x`). Of equal values the smallest code; of two values equally near, the even code (the
/// lower value if both codes have the same parity). NaN gives the code of the value nearest zero.
fn nearest(cb: &Codebook, x: f32) -> u8 {
    let x = if x.is_nan() { 0.0 } else { x as f64 };
    let mut distinct: Vec<(f64, u8)> = Vec::new();
    for (c, &v) in cb.values().iter().enumerate() {
        if !distinct.iter().any(|&(w, _)| w == v as f64) {
            distinct.push((v as f64, c as u8));
        }
    }
    let mut near: Vec<(f64, u8)> = distinct
        .iter()
        .copied()
        .filter(|&(v, _)| {
            distinct.iter().all(|&(w, _)| {
                let mid = (v + w) / 2.0;
                w == v || (w > v && x <= mid) || (w < v && x >= mid)
            })
        })
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    match near[..] {
        [(_, c)] => c,
        [(_, lo), (_, hi)] => {
            if lo % 2 == 0 || hi % 2 == 1 {
                lo
            } else {
                hi
            }
        }
        _ => unreachable!("one or two values are nearest"),
    }
}

#[test]
fn every_code_decodes_as_its_table() {
    for f in formats() {
        let cb = f.codebook();
        let n = 1usize << cb.bits();
        assert_eq!(cb.values().len(), n, "{f}");
        for c in 0..n as u8 {
            assert_eq!(cb.decode(c), cb.values()[c as usize], "{f} code {c}");
            assert_eq!(cb.try_decode(c), Some(cb.values()[c as usize]));
            // Every value encodes back to a code of the same value (the smallest such code).
            let back = cb.encode(cb.decode(c));
            assert_eq!(cb.decode(back), cb.decode(c), "{f} code {c}");
            assert!(back <= c || cb.decode(back) != cb.decode(c));
        }
        assert_eq!(cb.try_decode(n as u8), None, "{f}");
    }
}

#[test]
fn special_inputs_encode_as_specified() {
    for f in formats() {
        let cb = f.codebook();
        for x in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            0.0,
            -0.0,
        ] {
            assert_eq!(cb.encode(x), nearest(cb, x), "{f} x = {x}");
        }
        assert_eq!(cb.decode(cb.encode(f32::NAN)), 0.0, "{f}: NaN goes to zero");
    }
}

#[test]
fn every_threshold_at_plus_minus_one_ulp_goes_to_the_right_side() {
    for f in formats() {
        let cb = f.codebook();
        assert_eq!(cb.thresholds().len(), cb.sorted().len() - 1);
        for (i, w) in cb.sorted().windows(2).enumerate() {
            let mid = ((w[0].0 as f64 + w[1].0 as f64) / 2.0) as f32;
            let t = cb.thresholds()[i];
            assert!(
                w[0].0 <= t && t < w[1].0,
                "{f}: threshold {t} outside its pair"
            );
            assert_eq!(
                cb.encode(t),
                w[0].1,
                "{f}: threshold {t} belongs to the lower value"
            );
            assert_eq!(
                cb.encode(next_up(t)),
                w[1].1,
                "{f}: above {t} is the upper value"
            );
            let mut x = next_down(next_down(next_down(mid)));
            for _ in 0..7 {
                assert_eq!(cb.encode(x), nearest(cb, x), "{f}: x = {x:e} near {mid:e}");
                x = next_up(x);
            }
        }
    }
}

#[test]
fn exact_ties_go_to_the_even_code() {
    // E2M1: 0.25 is halfway between 0 (code 0) and 0.5 (code 1) -> 0; 0.75 between 0.5 (1) and 1
    // (2) -> 1; 5 between 4 (6) and 6 (7) -> 4. E2M1+SP: 5.5 between 5 (code 8) and 6 (7) -> 5.
    let e2m1 = Format::all()
        .into_iter()
        .find(|f| f.name() == "e2m1")
        .unwrap();
    let sp: Format = "e2m1_sp".parse().unwrap();
    for (cb, x, want) in [
        (e2m1.codebook(), 0.25, 0.0),
        (e2m1.codebook(), 0.75, 1.0),
        (e2m1.codebook(), -5.0, -4.0),
        (sp.codebook(), 5.5, 5.0),
        (sp.codebook(), 4.5, 4.0),
    ] {
        assert_eq!(cb.round(x), want, "x = {x}");
    }
}

#[test]
fn every_packed_byte_round_trips() {
    for b in 0..=255u8 {
        let mut codes = [0u8; 2];
        unpack_row(&[b], &mut codes);
        assert_eq!(
            codes,
            [b & 0x0f, b >> 4],
            "byte {b:#04x}: element 0 is the low nibble"
        );
        assert_eq!((code_at(&[b], 0), code_at(&[b], 1)), (codes[0], codes[1]));
        let mut packed = [0u8; 1];
        pack_row(&codes, &mut packed);
        assert_eq!(packed[0], b);
    }
    // An odd row leaves its last high nibble zero.
    let mut packed = [0xffu8; 2];
    pack_row(&[1, 2, 3], &mut packed);
    assert_eq!(packed, [0x21, 0x03]);
    assert_eq!(row_bytes(3), 2);
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO,
        -20.0f32..20.0,
        -1.2f32..1.2,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_is_the_brute_force_nearest_value(x in finite_f32(), which in 0usize..64) {
        let all = formats();
        let f = &all[which % all.len()];
        prop_assert_eq!(f.codebook().encode(x), nearest(f.codebook(), x), "{} x = {:e}", f, x);
    }

    #[test]
    fn batch_encoding_equals_one_at_a_time(
        xs in proptest::collection::vec(
            prop_oneof![finite_f32(), Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
            0..150,
        ),
        scale in prop_oneof![0.001f32..100.0, -100.0f32..-0.001, Just(1e-40f32)],
        which in 0usize..64,
    ) {
        let all = formats();
        let cb = all[which % all.len()].codebook();
        let mut out = vec![0u8; xs.len()];
        cb.encode_scaled(&xs, scale, &mut out);
        for (x, o) in xs.iter().zip(&out) {
            prop_assert_eq!(*o, cb.encode(x / scale), "x = {:e}", x);
        }
    }

    #[test]
    fn packing_round_trips(codes in proptest::collection::vec(0u8..16, 0..200)) {
        let mut packed = vec![0u8; row_bytes(codes.len())];
        pack_row(&codes, &mut packed);
        let mut back = vec![0u8; codes.len()];
        unpack_row(&packed, &mut back);
        prop_assert_eq!(back, codes);
    }
}
