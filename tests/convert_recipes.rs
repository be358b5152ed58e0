//! `tquant convert --format` takes a recipe, read as everywhere a recipe is parsed: a bare `sf4`
//! is nu = 5, `sf4_fit` fits nu per tensor, `+search` searches block scales, and `--nu` /
//! `--scale-rule` override what the recipe says. The default is the `balanced` preset's recipe,
//! `learned+search`.

use crate::support::{path, stderr_of_failure, stdout_ok, tiny_lite};
use serde_json::Value;

/// `tquant convert tiny-lite --json` with `extra`, and the summary.
fn convert(dir: &std::path::Path, name: &str, extra: &[&str]) -> Value {
    let (model, out) = (tiny_lite(), dir.join(name));
    let mut args = vec!["convert", path(&model), "-o", path(&out), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&stdout_ok(&args)).unwrap()
}

/// Every quantized matrix's nu, over all tensors.
fn nus(summary: &Value) -> Vec<f64> {
    summary["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["nu"].as_array().unwrap().clone())
        .filter_map(|v| v.as_f64())
        .collect()
}

#[test]
fn a_recipe_name_means_what_it_means_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let default = convert(tmp.path(), "default", &[]);
    let learned = convert(tmp.path(), "learned", &["--format", "learned+search"]);
    assert_eq!(
        (&default["format"], &default["scale_rule"]),
        (&learned["format"], &learned["scale_rule"])
    );
    assert_eq!(
        (&default["format"], &default["scale_rule"]),
        (&"learned".into(), &"search".into())
    );
    let fit = convert(tmp.path(), "fit", &["--format", "sf4_fit"]);
    assert_eq!(fit["nu"], "fit");
    assert!(
        nus(&fit).iter().any(|&nu| nu != 5.0),
        "fitted nu: {:?}",
        nus(&fit)
    );
    let paper = convert(tmp.path(), "sf4", &["--format", "sf4"]);
    assert_eq!(paper["nu"], 5.0);
    let n = nus(&paper);
    assert!(!n.is_empty() && n.iter().all(|&nu| nu == 5.0), "{n:?}");
    // --nu overrides a bare sf4's nu; one spelled in the recipe cannot be.
    let three = convert(tmp.path(), "sf4nu3", &["--format", "sf4", "--nu", "3"]);
    assert!(nus(&three).iter().all(|&nu| nu == 3.0));
    let (model, out) = (tiny_lite(), tmp.path().join("x"));
    let e = stderr_of_failure(&[
        "convert",
        path(&model),
        "-o",
        path(&out),
        "--format",
        "sf4:nu=4",
        "--nu",
        "3",
    ]);
    assert!(e.contains("'sf4:nu=4' already fixes nu; drop --nu"), "{e}");
}

#[test]
fn search_in_the_recipe_and_scale_rule_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let s = convert(tmp.path(), "search", &["--format", "nf4+search"]);
    assert_eq!(
        (&s["format"], &s["scale_rule"]),
        (&"nf4".into(), &"search".into())
    );
    let a = convert(
        tmp.path(),
        "absmax",
        &["--format", "nf4+search", "--scale-rule", "absmax"],
    );
    assert_eq!(a["scale_rule"], "absmax");
    let auto = convert(tmp.path(), "auto", &["--format", "auto:nf4/int4+search"]);
    assert_eq!(
        (&auto["format"], &auto["scale_rule"]),
        (&"auto:nf4,int4".into(), &"search".into())
    );
}

#[test]
fn a_gptq_recipe_needs_calibration() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, out) = (tiny_lite(), tmp.path().join("q"));
    for recipe in ["gptq:nf4", "auto:nf4/int4+gptq"] {
        let e = stderr_of_failure(&[
            "convert",
            path(&model),
            "-o",
            path(&out),
            "--format",
            recipe,
        ]);
        assert!(
            e.contains(&format!("recipe '{recipe}' quantizes with GPTQ"))
                && e.contains("--calibrate"),
            "{e}"
        );
        assert!(!out.exists());
    }
}
