//! Bad command-line options: each is refused before anything is read or written, with an error
//! that says what is wrong.

use crate::hostile_support;

use hostile_support::*;

#[test]
fn convert_refuses_bad_and_conflicting_options() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(&tmp.path().join("model"));
    let out = tmp.path().join("out");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--format", "sf5"], &["sf5"]),
        (&["--format", "nf4:nu=3"], &["takes no parameter"]),
        (&["--format", "sf4:nu=abc"], &["not a number"]),
        (&["--format", ""], &[]),
        (&["--block", "0"], &["block size 0 is not supported"]),
        (&["--block", "8"], &["block size 8 is not supported"]),
        (&["--block", "8192"], &["block size 8192 is not supported"]),
        (&["--block=-64"], &["'-64' is not a number"]),
        (&["--block", "rows"], &["'rows' is not a number or 'row'"]),
        (&["--scale-dtype", "f8"], &["f8"]),
        (&["--layout", "onnx"], &["unknown layout 'onnx'"]),
        (&["--layout", "bnb", "--format", "sf4"], &["--layout bnb"]),
        (&["--layout", "bnb", "--format", "int4"], &["--layout bnb"]),
        (&["--layout", "bnb", "--block", "48"], &["--layout bnb"]),
        (
            &["--layout", "bnb", "--scale-dtype", "f16"],
            &["--layout bnb"],
        ),
        (
            &["--layout", "mxfp4", "--block", "64"],
            &["--layout mxfp4", "block 64"],
        ),
        (
            &["--layout", "mxfp4", "--block", "row"],
            &["--layout mxfp4"],
        ),
        (
            &["--layout", "mxfp4", "--scale-dtype", "f16"],
            &["--layout mxfp4"],
        ),
        (
            &["--layout", "mxfp4", "--format", "nf4"],
            &["--layout mxfp4"],
        ),
        (
            &["--format", "nf4", "--nu", "5"],
            &["--nu applies to Student Float"],
        ),
        (
            &["--format", "int4", "--nu", "fit"],
            &["--nu applies to Student Float"],
        ),
        (
            &["--format", "sf4:nu=5", "--nu", "6"],
            &["already fixes nu"],
        ),
        (&["--nu", "banana"], &["'banana' is not a number"]),
        (&["--nu", "-1"], &[]),
        (&["--nu", "0"], &[]),
        (&["--nu", "NaN"], &[]),
        (&["--scale-dtype", "e8m0", "--format", "int4_full"], &[]),
        (&["--threads", "x"], &["invalid value 'x'"]),
        (
            &["--layout", "gguf", "--block", "64"],
            &["--block does not apply to --layout gguf"],
        ),
        (
            &["--layout", "gguf", "--calibrate-self", "8"],
            &["--calibrate-self does not apply to --layout gguf"],
        ),
        (
            &["--layout", "gguf", "--format", "nf4"],
            &["unknown gguf type 'nf4'"],
        ),
        (
            &["--layout", "gguf", "--format", "q4_0"],
            &["config.json: not found", "model's settings"],
        ),
        (&["--tokenizer", "x"], &["--tokenizer is for --layout gguf"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["convert", p(&model), "-o", p(&out)];
        args.extend_from_slice(extra);
        let res = tquant(&args);
        let stderr = String::from_utf8_lossy(&res.stderr);
        // clap's own usage errors exit with 2; every other refusal with 1.
        let code = res.status.code();
        assert!(
            code == Some(1) || code == Some(2),
            "{extra:?}: {:?}: {stderr}",
            res.status
        );
        assert!(!stderr.contains("panicked"), "{extra:?}: {stderr}");
        assert!(stderr.contains("error"), "{extra:?}: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{extra:?}: '{n}' not in: {stderr}");
        }
        assert!(!out.exists(), "{extra:?}: wrote an output");
    }
    assert_eq!(listing(tmp.path()), ["model"], "temporary files left");
}

#[test]
fn conflicting_layout_options_are_refused_by_the_library() {
    use tquant::convert::ConvertError;
    use tquant::convert::{ConvertOptions, Layout, Policy};
    let error = |f: Option<&str>, b: Option<&str>, s: Option<&str>, l: Layout| {
        ConvertOptions::from_args(f, None, b, s, l, Policy::default()).unwrap_err()
    };
    let err = |f, b, s, l| error(f, b, s, l).to_string();
    // The library names settings, not flags (the command line spells them: the CLI cases above).
    let e = error(Some("sf4"), None, None, Layout::Bnb);
    assert!(
        matches!(
            e,
            ConvertError::BnbSettings {
                format: Some(_),
                scale_dtype: None,
                block: None
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("layout bnb"), "{e}");
    for e in [
        error(None, Some("16"), None, Layout::Mxfp4),
        error(None, None, Some("bf16"), Layout::Mxfp4),
    ] {
        assert!(matches!(e, ConvertError::Mxfp4Settings { .. }), "{e}");
        assert!(e.to_string().contains("layout mxfp4"), "{e}");
    }
    assert!(err(Some("e2m1"), Some("0"), None, Layout::Tquant).contains("block size 0"));
    // The layouts' defaults are accepted as they are.
    for l in [Layout::Tquant, Layout::Mxfp4, Layout::Bnb] {
        ConvertOptions::from_args(None, None, None, None, l, Policy::default()).unwrap();
    }
}

#[test]
fn other_commands_refuse_bad_options() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(&tmp.path().join("model"));
    let text = tmp.path().join("t.txt");
    std::fs::write(&text, b"abc").unwrap();
    for args in [
        vec!["inspect"],
        vec!["verify", p(&model)],
        vec!["eval", p(&model)],
        vec![
            "eval",
            p(&model),
            "--text",
            p(&text),
            "--tokens-file",
            p(&text),
        ],
        vec!["run", p(&model)],
        vec!["convert", p(&model)],
    ] {
        let res = tquant(&args);
        assert_eq!(res.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(
            stderr.contains("error") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    // A text file that does not exist, and a model without config.json.
    assert_clean_error(
        &tquant(&["eval", p(&model), "--text", p(&tmp.path().join("none.txt"))]),
        &["config.json"],
    );
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite");
    assert_clean_error(
        &tquant(&["eval", p(&tiny), "--text", p(&tmp.path().join("none.txt"))]),
        &["none.txt"],
    );
}
