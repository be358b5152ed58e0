//! The Student-t quantile and the SF tables against scipy (tests/data/sf_tables.json, made by
//! scripts/fixtures/sf_tables.py), from nu = 0.5 to 1e12.

use serde_json::Value;
use tquant_formats::generate::{quantile, quantile_table, SF4_OFFSET};
use tquant_formats::Format;

fn data() -> Value {
    serde_json::from_str(include_str!("data/sf_tables.json")).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn quantile_matches_scipy_t_ppf() {
    let d = data();
    for case in d["ppf"].as_array().unwrap() {
        let nu = case["nu"].as_f64().unwrap();
        for (p, want) in f64s(&case["p"]).into_iter().zip(f64s(&case["q"])) {
            let got = quantile(p, Some(nu));
            let err = (got - want).abs() / want.abs().max(1.0);
            assert!(err < 1e-9, "nu = {nu}, p = {p}: {got} vs scipy {want}");
        }
    }
}

#[test]
fn infinite_nu_is_the_normal_table() {
    let d = data();
    let want = f64s(&d["normal"]["sf4"]);
    let got = Format::student_float(4, f64::INFINITY).unwrap();
    for (g, w) in got.codebook().values().iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-7);
    }
}

#[test]
fn student_float_tables_match_scipy() {
    let d = data();
    for case in d["tables"].as_array().unwrap() {
        let nu = case["nu"].as_f64().unwrap();
        for (bits, key, n_pos, n_neg) in [(4, "sf4", 8, 7), (3, "sf3", 4, 3)] {
            let want = f64s(&case[key]);
            let got = Format::student_float(bits, nu).unwrap();
            let generated = quantile_table(Some(nu), n_pos, n_neg, SF4_OFFSET);
            for (i, w) in want.iter().enumerate() {
                assert!(
                    (generated[i] as f64 - w).abs() < 1e-7,
                    "{key} nu = {nu} [{i}]: {} vs {w}",
                    generated[i]
                );
                let tol = if bits == 4 && nu == 5.0 { 1e-6 } else { 1e-7 }; // sf4 = the 6-decimal literal
                assert!(
                    (got.codebook().values()[i] as f64 - w).abs() < tol,
                    "{} [{i}]",
                    got.name()
                );
            }
        }
    }
}
