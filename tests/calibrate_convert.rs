//! The converter with calibration statistics (tquant_convert::calibration): GPTQ where there
//! are enough tokens, plain quantization where not, per expert of fused tensors, and `auto`
//! choosing by the activation-weighted error.

use std::sync::Arc;
use tquant::convert::calibration::{Calibration, CalibrationSettings, Hessian};
use tquant::convert::quantize::quantize_tensor;
use tquant::convert::{ConvertOptions, Dtype, Layout, Policy};
use tquant::formats::gptq::{gptq_quantize, weighted_error, GptqOptions};
use tquant::formats::sample::Rng;
use tquant::formats::{BlockQuantizer, BlockSize, Codebook, Format, QuantizedMatrix, ScaleDtype};

const COLS: usize = 64;
const ROWS: usize = 24;

/// `X^T X` of correlated inputs (a few shared factors plus noise, columns of varied scale).
fn correlated_moment(rng: &mut Rng, tokens: usize) -> Vec<f64> {
    let mix: Vec<f64> = (0..6 * COLS).map(|_| rng.normal()).collect();
    let scale: Vec<f64> = (0..COLS).map(|_| (rng.normal() * 0.7).exp()).collect();
    let mut h = vec![0.0; COLS * COLS];
    for _ in 0..tokens {
        let z: Vec<f64> = (0..6).map(|_| rng.normal()).collect();
        let x: Vec<f64> = (0..COLS)
            .map(|c| {
                ((0..6).map(|f| z[f] * mix[f * COLS + c]).sum::<f64>() + rng.normal()) * scale[c]
            })
            .collect();
        for i in 0..COLS {
            for j in 0..COLS {
                h[i * COLS + j] += x[i] * x[j];
            }
        }
    }
    h
}

fn options(format: &str) -> ConvertOptions {
    ConvertOptions::from_args(
        Some(format),
        None,
        Some("32"),
        Some("f16"),
        Layout::Tquant,
        Policy::default(),
    )
    .unwrap()
}

fn dequantized(t: &tquant::convert::QuantizedTensor, e: usize) -> Vec<f32> {
    let info = &t.info;
    let (cl, sl) = (
        t.codes.len() / info.experts(),
        t.scales.len() / info.experts(),
    );
    let m = QuantizedMatrix {
        rows: info.rows(),
        cols: info.cols(),
        block: info.block,
        scale_dtype: info.scale_dtype,
        codes: t.codes[e * cl..(e + 1) * cl].to_vec(),
        scales: t.scales[e * sl..(e + 1) * sl].to_vec(),
    };
    m.dequantize(&Codebook::new(info.matrices[e].codebook.clone()).unwrap())
}

struct Fixture {
    w: Vec<f32>,
    h: Vec<f64>,
    cal: Arc<Calibration>,
}

fn fixture() -> Fixture {
    let mut rng = Rng::new(21);
    let h = correlated_moment(&mut rng, 600);
    let w = rng.normal_vec(2 * ROWS * COLS);
    let mut cal = Calibration::new(CalibrationSettings::default(), "test".into(), 600);
    let stat = |tokens| Arc::new(Hessian::new(COLS, tokens, h.clone()).unwrap());
    cal.insert("a.weight", None, stat(600));
    let min = CalibrationSettings::default().min_tokens(COLS);
    cal.insert("few.weight", None, stat(min - 1));
    cal.insert("experts.down_proj", Some(0), stat(600));
    cal.insert("experts.down_proj", Some(1), stat(3));
    Fixture {
        w,
        h,
        cal: Arc::new(cal),
    }
}

#[test]
fn calibrated_matrices_are_gptq_and_the_rest_plain() {
    let f = fixture();
    let plain = options("nf4");
    let mut calibrated = plain.clone();
    calibrated.calibration = Some(f.cal.clone());
    let shape = [ROWS, COLS];
    let w = &f.w[..ROWS * COLS];

    let rtn = quantize_tensor("a.weight", w, &shape, Dtype::F32, &plain).unwrap();
    let g = quantize_tensor("a.weight", w, &shape, Dtype::F32, &calibrated).unwrap();
    let rec = g.info.calibration.clone().unwrap();
    assert_eq!((rec.calibrated, rec.tokens), (vec![true], vec![600]));
    assert!(rtn.info.calibration.is_none());
    // Exactly formats::gptq with the same settings.
    let q = BlockQuantizer {
        block: BlockSize::Elements(32),
        scale_dtype: ScaleDtype::F16,
    };
    let nf4: Format = "nf4".parse().unwrap();
    let direct = gptq_quantize(
        &q,
        nf4.codebook(),
        w,
        ROWS,
        COLS,
        &f.h,
        &GptqOptions::default(),
    )
    .unwrap();
    assert_eq!((&g.codes, &g.scales), (&direct.codes, &direct.scales));
    let (er, eg) = (
        weighted_error(w, &dequantized(&rtn, 0), ROWS, COLS, &f.h),
        weighted_error(w, &dequantized(&g, 0), ROWS, COLS, &f.h),
    );
    assert!(eg < 0.5 * er, "gptq {eg:.4e} vs rtn {er:.4e}");

    // Too few tokens, or no statistics: the plain quantization, recorded as such.
    let few = quantize_tensor("few.weight", w, &shape, Dtype::F32, &calibrated).unwrap();
    assert_eq!((&few.codes, &few.scales), (&rtn.codes, &rtn.scales));
    let rec = few.info.calibration.unwrap();
    let min = CalibrationSettings::default().min_tokens(COLS);
    assert_eq!(
        (rec.calibrated, rec.tokens, rec.min_tokens),
        (vec![false], vec![min - 1], min)
    );
    let none = quantize_tensor("other.weight", w, &shape, Dtype::F32, &calibrated).unwrap();
    assert_eq!(none.codes, rtn.codes);
    assert!(none.info.calibration.is_none());
}

#[test]
fn fused_experts_are_calibrated_one_by_one() {
    let f = fixture();
    let mut opts = options("int4_full");
    opts.calibration = Some(f.cal.clone());
    let shape = [2, ROWS, COLS];
    let t = quantize_tensor("experts.down_proj", &f.w, &shape, Dtype::F32, &opts).unwrap();
    let rec = t.info.calibration.clone().unwrap();
    assert_eq!(
        (rec.calibrated, rec.tokens),
        (vec![true, false], vec![600, 3])
    );
    let plain = quantize_tensor(
        "experts.down_proj",
        &f.w,
        &shape,
        Dtype::F32,
        &options("int4_full"),
    )
    .unwrap();
    let half = t.codes.len() / 2;
    assert_ne!(t.codes[..half], plain.codes[..half], "expert 0: GPTQ");
    assert_eq!(
        t.codes[half..],
        plain.codes[half..],
        "expert 1: too few tokens"
    );
}

#[test]
fn auto_keeps_the_candidate_with_the_least_output_error() {
    let f = fixture();
    let list = ["nf4", "int4_full", "e2m1", "apot4_sp"];
    let mut opts = options(&format!("auto:{}", list.join(",")));
    opts.calibration = Some(f.cal.clone());
    let w = &f.w[..ROWS * COLS];
    let t = quantize_tensor("a.weight", w, &[ROWS, COLS], Dtype::F32, &opts).unwrap();
    let q = BlockQuantizer {
        block: BlockSize::Elements(32),
        scale_dtype: ScaleDtype::F16,
    };
    let errors: Vec<f64> = list
        .iter()
        .map(|name| {
            let format: Format = name.parse().unwrap();
            let cb = format.codebook();
            let m = gptq_quantize(&q, cb, w, ROWS, COLS, &f.h, &GptqOptions::default()).unwrap();
            weighted_error(w, &m.dequantize(cb), ROWS, COLS, &f.h)
        })
        .collect();
    let best = (0..list.len())
        .min_by(|&a, &b| errors[a].total_cmp(&errors[b]))
        .unwrap();
    assert_eq!(t.info.matrices[0].format, list[best], "errors {errors:?}");
    let got = weighted_error(w, &dequantized(&t, 0), ROWS, COLS, &f.h);
    assert_eq!(got, errors[best]);
    assert!(t.info.matrices[0].fit_tensor.is_some());
}

#[test]
fn calibration_needs_the_tquant_layout() {
    let f = fixture();
    let mut opts =
        ConvertOptions::from_args(None, None, None, None, Layout::Bnb, Policy::default()).unwrap();
    opts.calibration = Some(f.cal);
    let e = opts.validate().unwrap_err();
    // The library names settings, not flags (the command line's "--calibrate needs --layout
    // tquant" is asserted in calibrate_cli and calibrate_self).
    assert!(
        matches!(
            e,
            tquant::convert::ConvertError::CalibrationLayout {
                layout: Layout::Bnb
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("layout tquant"), "{e}");
}
