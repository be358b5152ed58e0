//! `fit_student_t` against `scipy.stats.t.fit` on fixed samples (tests/data/tfit.json, made by
//! scripts/fixtures/tfit.py). scipy's own optimiser sometimes stops short, so the fixture also holds
//! its answer polished by a tight Nelder-Mead on the same likelihood: the MLE proper.

use serde_json::Value;
use tquant_formats::{fit_student_t, TFit};

fn cases() -> Vec<Value> {
    let text = include_str!("data/tfit.json");
    let v: Value = serde_json::from_str(text).expect("tfit.json parses");
    v["cases"].as_array().expect("cases").clone()
}

fn params(v: &Value) -> TFit {
    TFit {
        nu: v["nu"].as_f64().unwrap(),
        loc: v["loc"].as_f64().unwrap(),
        scale: v["scale"].as_f64().unwrap(),
    }
}

#[test]
fn fit_matches_scipy_t_fit() {
    let cases = cases();
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let x: Vec<f32> = case["x"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let scipy = params(&case["scipy"]);
        let mle = params(&case["polished"]);
        let ll_scipy = case["scipy"]["loglik"].as_f64().unwrap();
        let ll_mle = case["polished"]["loglik"].as_f64().unwrap();

        // Our likelihood formula agrees with scipy's logpdf.
        let ours_at_scipy = scipy.log_likelihood(&x);
        assert!(
            (ours_at_scipy - ll_scipy).abs() < 1e-8 * ll_scipy.abs().max(1.0),
            "{name}: log-likelihood at scipy's fit {ours_at_scipy} vs scipy {ll_scipy}"
        );

        let fit = fit_student_t(&x);
        let ll = fit.log_likelihood(&x);
        eprintln!(
            "{name}: ours {fit:?} ll {ll:.9}; scipy {scipy:?} ll {ll_scipy:.9}; mle ll {ll_mle:.9}"
        );
        // Never worse than scipy, and at the polished maximum to within 1e-7.
        assert!(ll >= ll_scipy - 1e-6, "{name}: ll {ll} < scipy {ll_scipy}");
        assert!(
            (ll - ll_mle).abs() < 1e-7,
            "{name}: ll {ll} vs mle {ll_mle}"
        );
        assert!(
            (fit.nu / mle.nu - 1.0).abs() < 1e-4,
            "{name}: nu {} vs {}",
            fit.nu,
            mle.nu
        );
        assert!(
            (fit.loc - mle.loc).abs() < 1e-4 * mle.scale,
            "{name}: loc {} vs {}",
            fit.loc,
            mle.loc
        );
        assert!(
            (fit.scale / mle.scale - 1.0).abs() < 1e-5,
            "{name}: scale {} vs {}",
            fit.scale,
            mle.scale
        );
        // Where scipy.stats.t.fit did converge, we agree with it directly too.
        if (ll_mle - ll_scipy).abs() < 1e-5 {
            assert!(
                (fit.nu / scipy.nu - 1.0).abs() < 1e-3,
                "{name}: nu vs scipy"
            );
            assert!(
                (fit.scale / scipy.scale - 1.0).abs() < 1e-3,
                "{name}: scale vs scipy"
            );
        }
    }
}
