//! The compatible layouts against their reference implementations (tests/data/layouts.json, made
//! by scripts/fixtures/layouts.py with bitsandbytes 0.50 on the CPU, torch's vendored torchao
//! E2M1 conversion and transformers' MXFP4 dequantization).

use serde_json::Value;
use tquant_formats::layouts::{
    bnb_nf4_quantize, mxfp4_codebook, mxfp4_quantize, BnbNf4, MxScaleRule, Mxfp4, MXFP4_BLOCK,
};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, FormatError, ScaleDtype};

fn data() -> Value {
    serde_json::from_str(include_str!("data/layouts.json")).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn bnb_nf4_matches_bitsandbytes_bit_for_bit() {
    let d = data();
    let cases = d["bnb_nf4"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let x = f32s(&case["x"]);
        let bs = case["blocksize"].as_u64().unwrap() as usize;
        let q = bnb_nf4_quantize(&x, bs).unwrap();
        let want = hex(&case["packed"]);
        let first_diff = q.packed.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(q.packed.len(), want.len(), "{name}");
        assert!(first_diff.is_none(), "{name}: byte {first_diff:?} differs");
        assert_eq!(
            bits(&q.absmax),
            bits(&f32s(&case["absmax"])),
            "{name}: absmax"
        );
        let deq = q.dequantize().unwrap();
        assert_eq!(
            bits(&deq),
            bits(&f32s(&case["dequant"])),
            "{name}: dequantize"
        );
    }
}

#[test]
fn mxfp4_matches_torchao_and_transformers() {
    let d = data();
    for case in d["mxfp4"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (rows, cols) = (
            case["rows"].as_u64().unwrap() as usize,
            case["cols"].as_u64().unwrap() as usize,
        );
        let x = f32s(&case["x"]);
        let mx = mxfp4_quantize(&x, rows, cols, MxScaleRule::Floor).unwrap();
        assert_eq!(mx.scales, hex(&case["scales"]), "{name}: scales");
        assert_eq!(mx.blocks, hex(&case["blocks"]), "{name}: blocks");
        // transformers' dequantization of the reference bytes, and ours of the same bytes.
        let deq = mx.dequantize().unwrap();
        assert_eq!(
            bits(&deq),
            bits(&f32s(&case["dequant"])),
            "{name}: dequantize"
        );
    }
}

#[test]
fn bnb_nf4_converts_to_tquant_and_decodes_the_same() {
    let x = Rng::new(1).normal_vec(6 * 128);
    let q = bnb_nf4_quantize(&x, 64).unwrap();
    let m = q.to_matrix(6, 128).unwrap();
    let nf4: Format = "nf4".parse().unwrap();
    assert_eq!(m.dequantize(nf4.codebook()), q.dequantize().unwrap());
    // tquant's own quantizer with the same block and f32 scales agrees on the scales; its codes
    // may differ from bnb's only where bnb's reciprocal or f32 midpoints round the other way.
    let t = BlockQuantizer {
        block: BlockSize::Elements(64),
        scale_dtype: ScaleDtype::F32,
    }
    .quantize(nf4.codebook(), &x, 6, 128)
    .unwrap();
    assert_eq!(t.scales, m.scales);
    let same = t.codes.iter().zip(&m.codes).filter(|(a, b)| a == b).count();
    assert!(
        same as f64 >= 0.999 * t.codes.len() as f64,
        "{same} of {}",
        t.codes.len()
    );
    // Blocks that cross rows cannot become tquant blocks.
    assert!(q.to_matrix(12, 64).is_ok());
    assert!(q.to_matrix(24, 32).is_err());
    assert!(q.to_matrix(5, 128).is_err());
}

#[test]
fn mxfp4_is_tquant_e2m1_with_e8m0_blocks_of_32() {
    let x = Rng::new(2).student_t_vec(8 * 64, 4.0);
    let mx = mxfp4_quantize(&x, 8, 64, MxScaleRule::Floor).unwrap();
    let e2m1 = mxfp4_codebook();
    assert_eq!(e2m1, *"e2m1".parse::<Format>().unwrap().codebook());
    // tquant's block quantizer with e2m1, blocks of 32 and E8M0 scales makes the same scales and
    // the same values; only the sign of zero may differ (tquant never emits -0).
    let t = BlockQuantizer {
        block: BlockSize::Elements(MXFP4_BLOCK),
        scale_dtype: ScaleDtype::E8m0,
    }
    .quantize(&e2m1, &x, 8, 64)
    .unwrap();
    assert_eq!(t.scales, mx.scales);
    let m = mx.clone().into_matrix().unwrap();
    assert_eq!(m.dequantize(&e2m1), t.dequantize(&e2m1));
    assert_eq!(m.dequantize(&e2m1), mx.dequantize().unwrap());
    let back = Mxfp4::from_matrix(m).unwrap();
    assert_eq!(back, mx);
    assert!(Mxfp4::from_matrix(t.clone()).is_ok());
}

#[test]
fn mxfp4_ceil_rule_never_clips_and_rounds_ties_away() {
    let x = Rng::new(3).normal_vec(16 * 32);
    let mx = mxfp4_quantize(&x, 16, 32, MxScaleRule::Ceil).unwrap();
    let deq = mx.dequantize().unwrap();
    for (g, group) in x.chunks(32).enumerate() {
        let amax = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = 2f32.powi(mx.scales[g] as i32 - 127);
        // The smallest power of two with amax / s <= 6.
        assert!(amax / s <= 6.0 && amax / (s / 2.0) > 6.0, "group {g}");
        for (i, &v) in group.iter().enumerate() {
            let y = deq[g * 32 + i];
            // Nearest E2M1 value times s, ties away from zero: within half a step, never clipped.
            let step = if (v / s).abs() < 2.0 {
                0.5
            } else if (v / s).abs() < 4.0 {
                1.0
            } else {
                2.0
            };
            assert!((v - y).abs() <= 0.5 * step * s, "{v} -> {y}");
        }
    }
    // Ties: 4 sets the scale to 1 under both rules; 0.25 and 2.5 are ties.
    let mut t = vec![0.0f32; 32];
    t[..5].copy_from_slice(&[4.0, 0.25, 2.5, -0.75, 5.0]);
    let away = mxfp4_quantize(&t, 1, 32, MxScaleRule::Ceil).unwrap();
    let even = mxfp4_quantize(&t, 1, 32, MxScaleRule::Floor).unwrap();
    assert_eq!(away.dequantize().unwrap()[..5], [4.0, 0.5, 3.0, -1.0, 6.0]);
    assert_eq!(even.dequantize().unwrap()[..5], [4.0, 0.0, 2.0, -1.0, 4.0]);
}

#[test]
fn layouts_refuse_what_they_cannot_store() {
    assert!(matches!(
        bnb_nf4_quantize(&[1.0, f32::NAN], 64),
        Err(FormatError::NotFinite { index: 1, .. })
    ));
    assert!(matches!(
        bnb_nf4_quantize(&[1.0; 8], 48),
        Err(FormatError::BnbBlockSize { blocksize: 48 })
    ));
    assert!(matches!(
        mxfp4_quantize(&[0.0; 48], 1, 48, MxScaleRule::Floor),
        Err(FormatError::Mxfp4Row { cols: 48 })
    ));
    assert!(matches!(
        mxfp4_quantize(&[0.0; 64], 3, 32, MxScaleRule::Floor),
        Err(FormatError::MatrixLength { .. })
    ));
    assert!(matches!(
        mxfp4_quantize(&[f32::INFINITY; 32], 1, 32, MxScaleRule::Ceil),
        Err(FormatError::NotFinite { .. })
    ));
    let bad = BnbNf4 {
        packed: vec![0; 3],
        absmax: vec![1.0],
        blocksize: 64,
        numel: 8,
    };
    assert!(matches!(
        bad.dequantize(),
        Err(FormatError::BnbLength { .. })
    ));
    let nan_scale = Mxfp4 {
        blocks: vec![0; 16],
        scales: vec![255],
        rows: 1,
        cols: 32,
    };
    assert!(matches!(
        nan_scale.dequantize(),
        Err(FormatError::Mxfp4NanScale { group: 0 })
    ));
    let short = Mxfp4 {
        blocks: vec![0; 15],
        scales: vec![127],
        rows: 1,
        cols: 32,
    };
    assert!(matches!(
        short.dequantize(),
        Err(FormatError::Mxfp4Length { .. })
    ));
}
