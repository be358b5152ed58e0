//! Generators that rebuild each literal table from its construction rule (tested equal to them).

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// At and above this many degrees of freedom the Student-t quantile comes from its Cornish-Fisher
/// expansion around the normal quantile (Abramowitz and Stegun 26.7.5, four terms; 1.5e-12 from
/// scipy at nu = 500, better above); below it from statrs. statrs' `inverse_cdf` drifts as nu
/// grows (2e-9 at nu = 1e3, 1e-5 at 1e6, 0.1 at 1e7) and stops returning near 3e7.
pub const NU_NORMAL_LIMIT: f64 = 500.0;

/// `1 - delta` with `delta = (1/32 + 1/30) / 2` (the paper's Algorithm 1), exact.
pub const SF4_OFFSET: f64 = 1.0 - 0.5 * (1.0 / 32.0 + 1.0 / 30.0);
/// bitsandbytes' truncated literal of the same number, used by its NF4 table.
pub const NF4_OFFSET_BNB: f64 = 0.9677083;
/// The 3-bit NF offset: `1 - (1/14 + 1/16) / 2`.
pub const NF3_OFFSET: f64 = 1.0 - 0.5 * (1.0 / 14.0 + 1.0 / 16.0);

/// Quantile of the standard Student-t with `nu` degrees of freedom (`None` or infinite `nu`: the
/// normal).
pub fn quantile(p: f64, nu: Option<f64>) -> f64 {
    match nu {
        Some(nu) if nu < NU_NORMAL_LIMIT => StudentsT::new(0.0, 1.0, nu)
            .expect("nu > 0 is checked by the caller")
            .inverse_cdf(p),
        Some(nu) => cornish_fisher(Normal::new(0.0, 1.0).unwrap().inverse_cdf(p), nu),
        None => Normal::new(0.0, 1.0).unwrap().inverse_cdf(p),
    }
}

/// `t = z + g1/nu + g2/nu^2 + g3/nu^3 + g4/nu^4` (A&S 26.7.5).
fn cornish_fisher(z: f64, nu: f64) -> f64 {
    let z2 = z * z;
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    let r = 1.0 / nu;
    z + r * (g1 + r * (g2 + r * (g3 + r * g4)))
}

fn linspace(a: f64, b: f64, n: usize) -> impl Iterator<Item = f64> {
    (0..n).map(move |i| a + (b - a) * i as f64 / (n - 1) as f64)
}

/// bitsandbytes' `create_normal_map` with the normal's quantile replaced by Student-t's:
/// `n_pos` positive quantiles from `linspace(offset, 0.5, n_pos + 1)`, `n_neg` negative ones from
/// `linspace(offset, 0.5, n_neg + 1)`, plus zero; ascending and divided by the largest magnitude.
pub fn quantile_table(nu: Option<f64>, n_pos: usize, n_neg: usize, offset: f64) -> Vec<f32> {
    let mut v: Vec<f64> = linspace(offset, 0.5, n_pos + 1)
        .take(n_pos)
        .map(|p| quantile(p, nu))
        .collect();
    v.extend(
        linspace(offset, 0.5, n_neg + 1)
            .take(n_neg)
            .map(|p| -quantile(p, nu)),
    );
    v.push(0.0);
    v.sort_by(f64::total_cmp);
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    v.into_iter().map(|x| (x / max) as f32).collect()
}

/// Sign-magnitude table: codes `0..half` are `magnitudes`, codes `half..` their negatives.
pub fn sign_magnitude(magnitudes: &[f32]) -> Vec<f32> {
    magnitudes
        .iter()
        .copied()
        .chain(magnitudes.iter().map(|m| -m))
        .collect()
}

/// Magnitudes of a minifloat with `e` exponent bits, `m` mantissa bits and the given bias,
/// with subnormals (exponent field 0), and no infinities or NaN.
pub fn minifloat_magnitudes(e: u32, m: u32, bias: i32) -> Vec<f32> {
    let mut out = Vec::new();
    for field in 0..(1u32 << (e + m)) {
        let exp = (field >> m) as i32;
        let man = (field & ((1 << m) - 1)) as f32 / (1u32 << m) as f32;
        out.push(if exp == 0 {
            man * 2f32.powi(1 - bias)
        } else {
            (1.0 + man) * 2f32.powi(exp - bias)
        });
    }
    out
}

/// APoT magnitudes: every sum of one element of `s1` and one of `s2`, ascending, deduplicated,
/// divided by the largest.
pub fn apot_magnitudes(s1: &[f64], s2: &[f64]) -> Vec<f32> {
    let mut v: Vec<f64> = s1
        .iter()
        .flat_map(|a| s2.iter().map(move |b| a + b))
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    let max = v.last().copied().unwrap_or(1.0);
    v.into_iter().map(|x| (x / max) as f32).collect()
}

/// bitsandbytes' `create_normal_map(offset, use_extra_value=True)` step by step in its own
/// precisions: `torch.linspace` in f32 (`start + step * i`, `step = (end - start) / (n - 1)`),
/// the normal quantile in f64 (scipy's `norm.ppf` of the f32 probabilities), the results stored
/// as f32, sorted, and divided by their maximum in f32. `torch.linspace` computes its first half
/// from the start and its second half from the end (`end - step * (n - 1 - i)`), which matters in
/// the last bit. With `offset = 0.9677083` this is bitsandbytes' NF4 table bit for bit.
pub fn bnb_create_normal_map(offset: f32) -> Vec<f32> {
    // torch.linspace(offset, 0.5, n)[:-1] in f32 (aten's linspace_kernel).
    let linspace_f32 = |n: usize| -> Vec<f32> {
        let end = 0.5f32;
        let step = (end - offset) / (n - 1) as f32;
        (0..n - 1)
            .map(|i| {
                if i < n / 2 {
                    offset + step * i as f32
                } else {
                    end - step * (n - 1 - i) as f32
                }
            })
            .collect()
    };
    let normal = Normal::new(0.0, 1.0).unwrap();
    let mut v: Vec<f32> = linspace_f32(9)
        .into_iter()
        .map(|p| normal.inverse_cdf(p as f64) as f32)
        .collect();
    v.extend(
        linspace_f32(8)
            .into_iter()
            .map(|p| -(normal.inverse_cdf(p as f64)) as f32),
    );
    v.push(0.0);
    v.sort_by(f32::total_cmp);
    let max = v.iter().fold(f32::MIN, |m, &x| m.max(x));
    v.into_iter().map(|x| x / max).collect()
}
