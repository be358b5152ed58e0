//! GPTQ (tquant_formats::gptq): identity statistics give plain rounding bit for bit, correlated
//! inputs give a smaller output error than rounding, and no `H` makes it panic.

use tquant_formats::gptq::{gptq_quantize, weighted_error, GptqFactor, GptqOptions};
use tquant_formats::sample::Rng;
use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype, ScaleRule};

fn identity(n: usize, scale: f64) -> Vec<f64> {
    let mut h = vec![0.0; n * n];
    for i in 0..n {
        h[i * n + i] = scale;
    }
    h
}

/// `X^T X` of `[tokens, dim]` inputs.
fn second_moment(x: &[f32], tokens: usize, dim: usize) -> Vec<f64> {
    let mut h = vec![0.0f64; dim * dim];
    for t in 0..tokens {
        let row = &x[t * dim..(t + 1) * dim];
        for i in 0..dim {
            for j in 0..dim {
                h[i * dim + j] += row[i] as f64 * row[j] as f64;
            }
        }
    }
    h
}

/// Inputs with strongly correlated features of very different sizes: a few latent factors
/// mixed into every column, plus independent noise, each column with its own scale.
fn correlated_inputs(rng: &mut Rng, tokens: usize, dim: usize, factors: usize) -> Vec<f32> {
    let mix: Vec<f64> = (0..factors * dim).map(|_| rng.normal()).collect();
    let col_scale: Vec<f64> = (0..dim).map(|_| (rng.normal() * 0.8).exp()).collect();
    let mut x = vec![0.0f32; tokens * dim];
    for t in 0..tokens {
        let z: Vec<f64> = (0..factors).map(|_| rng.normal()).collect();
        for c in 0..dim {
            let v: f64 = (0..factors).map(|f| z[f] * mix[f * dim + c]).sum::<f64>() + rng.normal();
            x[t * dim + c] = (v * col_scale[c]) as f32;
        }
    }
    x
}

fn quantizer(block: usize, dtype: ScaleDtype) -> BlockQuantizer {
    BlockQuantizer {
        block: BlockSize::new(block).unwrap(),
        scale_dtype: dtype,
    }
}

#[test]
fn identity_statistics_give_plain_rounding_bit_for_bit() {
    let mut rng = Rng::new(7);
    // 80 columns: one block of 64 and a short tail of 16.
    let (rows, cols) = (9, 80);
    let w = rng.student_t_vec(rows * cols, 4.0);
    for format in Format::all() {
        for dtype in [ScaleDtype::F32, ScaleDtype::F16, ScaleDtype::E8m0] {
            let q = quantizer(64, dtype);
            if q.check(format.codebook()).is_err() {
                continue;
            }
            for rule in ScaleRule::ALL {
                let rtn = q
                    .quantize_with(format.codebook(), &w, rows, cols, rule)
                    .unwrap();
                for act_order in [false, true] {
                    let opts = GptqOptions {
                        act_order,
                        rule,
                        ..GptqOptions::default()
                    };
                    // Any multiple of the identity, damped or not.
                    let h = identity(cols, 3.5);
                    let g =
                        gptq_quantize(&q, format.codebook(), &w, rows, cols, &h, &opts).unwrap();
                    assert_eq!(g, rtn, "{format} {dtype} {rule} act_order={act_order}");
                }
            }
        }
    }
}

#[test]
fn correlated_inputs_get_a_smaller_output_error_than_rounding() {
    let mut rng = Rng::new(11);
    let (rows, cols, tokens) = (32, 128, 2048);
    let x = correlated_inputs(&mut rng, tokens, cols, 12);
    let h = second_moment(&x, tokens, cols);
    let w = rng.normal_vec(rows * cols);
    for name in ["nf4", "int4_full", "apot4_sp", "e2m1", "int3"] {
        let format: Format = name.parse().unwrap();
        let cb = format.codebook();
        let q = quantizer(32, ScaleDtype::F16);
        let rtn = q.quantize(cb, &w, rows, cols).unwrap().dequantize(cb);
        let rtn_err = weighted_error(&w, &rtn, rows, cols, &h);
        for act_order in [false, true] {
            let opts = GptqOptions {
                act_order,
                ..GptqOptions::default()
            };
            let g = gptq_quantize(&q, cb, &w, rows, cols, &h, &opts)
                .unwrap()
                .dequantize(cb);
            let g_err = weighted_error(&w, &g, rows, cols, &h);
            // Measured ratios (this seed): 0.10 to 0.14 in column order, 0.07 to 0.09 with
            // act-order; the bar leaves room for other seeds.
            assert!(
                g_err < 0.3 * rtn_err,
                "{name} act_order={act_order}: gptq {g_err:.4e} vs rtn {rtn_err:.4e}"
            );
        }
    }
}

#[test]
fn output_error_matches_a_direct_product_on_the_inputs() {
    // tr((W-Q) H (W-Q)^T) is the summed squared output error over the tokens behind H.
    let mut rng = Rng::new(3);
    let (rows, cols, tokens) = (5, 24, 40);
    let x = correlated_inputs(&mut rng, tokens, cols, 3);
    let h = second_moment(&x, tokens, cols);
    let w = rng.normal_vec(rows * cols);
    let q: Vec<f32> = w.iter().map(|v| (v * 4.0).round() / 4.0).collect();
    let mut direct = 0.0f64;
    for t in 0..tokens {
        for r in 0..rows {
            let y: f64 = (0..cols)
                .map(|c| (w[r * cols + c] - q[r * cols + c]) as f64 * x[t * cols + c] as f64)
                .sum();
            direct += y * y;
        }
    }
    let via_h = weighted_error(&w, &q, rows, cols, &h);
    assert!(
        (via_h - direct).abs() <= 1e-9 * direct.max(1.0),
        "{via_h} vs {direct}"
    );
}

#[test]
fn singular_statistics_never_panic() {
    let mut rng = Rng::new(5);
    let (rows, cols) = (6, 64);
    let w = rng.normal_vec(rows * cols);
    let cb = "nf4".parse::<Format>().unwrap().codebook().clone();
    let q = quantizer(32, ScaleDtype::F16);
    let rtn = q.quantize(&cb, &w, rows, cols).unwrap();
    let opts = GptqOptions::default();

    // All zero: nothing was seen, plain rounding.
    let zero = vec![0.0; cols * cols];
    let f = GptqFactor::new(&zero, cols, &opts).unwrap();
    assert_eq!(f.damp_used(), None);
    assert_eq!(f.quantize(&q, &cb, &w, rows, cols, opts.rule).unwrap(), rtn);

    // Rank one (a single token), with and without damping, and with dead inputs.
    let x: Vec<f32> = (0..cols)
        .map(|c| if c % 5 == 0 { 0.0 } else { rng.normal() as f32 })
        .collect();
    let h1 = second_moment(&x, 1, cols);
    for damp in [0.0, 1e-12, 0.01, 1.0] {
        let opts = GptqOptions {
            damp,
            act_order: true,
            ..GptqOptions::default()
        };
        let f = GptqFactor::new(&h1, cols, &opts).unwrap();
        assert!(f.damp_used().is_some_and(|d| d >= damp), "damp {damp}");
        let m = f.quantize(&q, &cb, &w, rows, cols, opts.rule).unwrap();
        let deq = m.dequantize(&cb);
        assert!(deq.iter().all(|v| v.is_finite()));
        // On the one token it saw, it does at least as well as rounding.
        let g = weighted_error(&w, &deq, rows, cols, &h1);
        let r = weighted_error(&w, &rtn.dequantize(&cb), rows, cols, &h1);
        assert!(g <= r * 1.0001 + 1e-9, "damp {damp}: {g} vs {r}");
    }

    // Tiny and huge magnitudes factor too.
    for s in [1e-30, 1e30] {
        let h: Vec<f64> = h1.iter().map(|v| v * s).collect();
        let m = gptq_quantize(&q, &cb, &w, rows, cols, &h, &opts).unwrap();
        assert!(m.dequantize(&cb).iter().all(|v| v.is_finite()));
    }
}

#[test]
fn bad_statistics_are_errors_not_panics() {
    let cols = 16;
    let q = quantizer(16, ScaleDtype::F32);
    let cb = "int4".parse::<Format>().unwrap().codebook().clone();
    let w = vec![0.5f32; 2 * cols];
    let opts = GptqOptions::default();
    let mut h = identity(cols, 1.0);
    assert!(gptq_quantize(&q, &cb, &w, 2, cols, &h[1..], &opts).is_err());
    h[3] = f64::NAN;
    assert!(gptq_quantize(&q, &cb, &w, 2, cols, &h, &opts).is_err());
    let h = identity(cols, 1.0);
    assert!(gptq_quantize(&q, &cb, &w[1..], 2, cols, &h, &opts).is_err());
    let bad_damp = GptqOptions {
        damp: f64::NAN,
        ..opts
    };
    assert!(GptqFactor::new(&h, cols, &bad_damp).is_err());
    // A factor for 16 columns refuses a matrix of 32.
    let f = GptqFactor::new(&h, cols, &opts).unwrap();
    assert!(f
        .quantize(&q, &cb, &[0.0; 64], 2, 32, ScaleRule::Absmax)
        .is_err());
}
