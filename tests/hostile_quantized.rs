//! Tampered quantized checkpoints: the reader behind inspect, verify, eval and run refuses them
//! at open, naming the file and the tensor, before any code or scale is read.

use crate::hostile_support;

use hostile_support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{convert, Checkpoint, ConvertOptions, Layout, Policy, Weight};

const Q: &str = "model.layers.0.mlp.up_proj.weight";
const E: &str = "model.layers.0.mlp.experts.gate_up_proj";

fn source(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        st_bytes(
            &[
                f32s(Q, &[32, 64], &values(2048, 1)),
                f32s(E, &[2, 8, 64], &values(1024, 2)),
                f32s("model.norm.weight", &[64], &values(64, 3)),
            ],
            &[],
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

fn quantized(src: &Path, dst: &Path, format: Option<&str>, layout: Layout) -> PathBuf {
    let opts =
        ConvertOptions::from_args(format, None, None, None, layout, Policy::default()).unwrap();
    convert(src, dst, &opts, &RunOptions::default(), &NoProgress).unwrap();
    dst.to_path_buf()
}

/// Edits the JSON description of quantized tensor `name` in the metadata.
fn edit_info(meta: &mut [(String, String)], name: &str, edit: impl FnOnce(&mut Value)) {
    let key = format!("tquant.{name}");
    let entry = meta.iter_mut().find(|(k, _)| *k == key).expect("described");
    let mut v: Value = serde_json::from_str(&entry.1).unwrap();
    edit(&mut v);
    entry.1 = v.to_string();
}

type Edit = Box<dyn Fn(&mut Vec<T>, &mut Vec<(String, String)>)>;

fn tquant_cases() -> Vec<(&'static str, &'static str, Edit)> {
    let info = |f: fn(&mut Value)| -> Edit { Box::new(move |_, m| edit_info(m, Q, f)) };
    vec![
        (
            "codebook_short",
            "",
            Box::new(|t, _| {
                let cb = find(t, &format!("{Q}.codebook"));
                cb.shape = vec![8];
                cb.bytes.truncate(32);
            }),
        ),
        (
            "codebook_long",
            "",
            Box::new(|t, _| {
                let cb = find(t, &format!("{Q}.codebook"));
                cb.shape = vec![17];
                cb.bytes.extend_from_slice(&1.0f32.to_le_bytes());
            }),
        ),
        (
            "codebook_not_f32",
            "",
            Box::new(|t, _| {
                let cb = find(t, &format!("{Q}.codebook"));
                cb.dtype = "F16";
                cb.shape = vec![32];
            }),
        ),
        (
            "codebook_nan",
            "not finite",
            Box::new(|t, _| {
                let cb = find(t, &format!("{Q}.codebook"));
                cb.bytes[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            }),
        ),
        (
            "scales_one_row_short",
            "",
            Box::new(|t, _| {
                let s = find(t, &format!("{Q}.scales"));
                s.shape[0] -= 1;
                let n = s.bytes.len() / 32 * 31;
                s.bytes.truncate(n);
            }),
        ),
        (
            "scales_flattened",
            "",
            Box::new(|t, _| {
                let s = find(t, &format!("{Q}.scales"));
                s.shape = vec![s.shape.iter().product()];
            }),
        ),
        (
            "codes_short",
            "",
            Box::new(|t, _| {
                let c = find(t, &format!("{Q}.codes"));
                c.shape[1] -= 1;
                c.bytes.truncate(32 * 31);
            }),
        ),
        (
            "codes_missing",
            "lacks its part",
            Box::new(|t, _| t.retain(|t| t.name != format!("{Q}.codes"))),
        ),
        (
            "codes_wrong_dtype",
            "",
            Box::new(|t, _| {
                let c = find(t, &format!("{Q}.codes"));
                c.dtype = "I8";
            }),
        ),
        (
            "shape_transposed",
            "",
            info(|v| v["shape"] = json!([64, 32])),
        ),
        ("shape_wider", "", info(|v| v["shape"] = json!([32, 128]))),
        (
            "shape_1d",
            "2-D or 3-D",
            info(|v| v["shape"] = json!([2048])),
        ),
        (
            "shape_zero",
            "no empty dimension",
            info(|v| v["shape"] = json!([0, 64])),
        ),
        (
            "shape_overflows",
            "overflows",
            info(|v| v["shape"] = json!([4294967296u64, 4294967296u64, 16])),
        ),
        (
            "block_zero",
            "out of range",
            info(|v| v["block"] = json!(0)),
        ),
        ("block_other", "", info(|v| v["block"] = json!(32))),
        ("bits_five", "out of range", info(|v| v["bits"] = json!(5))),
        ("bits_three", "", info(|v| v["bits"] = json!(3))),
        (
            "version_future",
            "version 2",
            info(|v| v["version"] = json!(2)),
        ),
        (
            "version_zero",
            "version 0",
            info(|v| v["version"] = json!(0)),
        ),
        (
            "layout_unknown",
            "gguf",
            info(|v| v["layout"] = json!("gguf")),
        ),
        (
            "layout_other",
            "not tquant's",
            info(|v| v["layout"] = json!("mxfp4")),
        ),
        (
            "format_unknown",
            "sf9",
            info(|v| v["format"] = json!("sf9")),
        ),
        (
            "matrix_format_unknown",
            "bogus",
            info(|v| v["matrices"][0]["format"] = json!("bogus")),
        ),
        (
            "matrix_format_wrong_bits",
            "sf3",
            info(|v| v["matrices"][0]["format"] = json!("sf3:nu=5")),
        ),
        (
            "scale_dtype_unknown",
            "f8",
            info(|v| v["scale_dtype"] = json!("f8")),
        ),
        (
            "scale_dtype_other",
            "",
            info(|v| v["scale_dtype"] = json!("f32")),
        ),
        (
            "matrices_none",
            "0 matrices",
            info(|v| v["matrices"] = json!([])),
        ),
        (
            "matrices_extra",
            "2 matrices",
            info(|v| {
                let m = v["matrices"][0].clone();
                v["matrices"] = json!([m.clone(), m]);
            }),
        ),
        (
            "field_missing",
            "not valid",
            info(|v| {
                v.as_object_mut().unwrap().remove("bits");
            }),
        ),
        ("not_an_object", "not valid", info(|v| *v = json!([1, 2]))),
        (
            "metadata_not_json",
            "not valid",
            Box::new(|_, m| {
                let key = format!("tquant.{Q}");
                m.iter_mut().find(|(k, _)| *k == key).unwrap().1 = "{\"version\": 1,".into();
            }),
        ),
        (
            "experts_mismatch",
            "",
            Box::new(|_, m| edit_info(m, E, |v| v["shape"] = json!([3, 8, 64]))),
        ),
    ]
}

#[test]
fn reader_rejects_tampered_tquant_checkpoints_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(&tmp.path().join("src"));
    let good = quantized(&src, &tmp.path().join("good"), None, Layout::Tquant);
    let ckpt = Checkpoint::open(&good).unwrap();
    assert!(matches!(ckpt.get(Q).unwrap(), Weight::Quantized(_)));
    assert!(matches!(ckpt.get(E).unwrap(), Weight::Quantized(_)));
    drop(ckpt);
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "abc").unwrap();
    for (name, needle, edit) in tquant_cases() {
        let dir = tmp.path().join(name);
        copy_dir(&good, &dir);
        rebuild(&dir.join("model.safetensors"), |t, m| edit(t, m));
        let err = Checkpoint::open(&dir)
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(err.contains("model.safetensors"), "{name}: {err}");
        assert!(
            err.contains(".weight") || err.contains("gate_up_proj"),
            "{name}: {err}"
        );
        assert!(err.contains(needle), "{name}: '{needle}' not in {err}");
        for args in [
            vec!["inspect", p(&dir)],
            vec!["verify", p(&src), p(&dir)],
            vec!["eval", p(&dir), "--text", p(&text)],
        ] {
            assert_clean_error(&tquant(&args), &["model.safetensors", needle]);
        }
    }
}

/// Codes a 3-bit codebook cannot index (it has 8 entries, a nibble holds 16) are refused at
/// open, naming the tensor and the element: the kernels would otherwise read zeros for them.
#[test]
fn codes_outside_a_3_bit_codebook_are_refused_not_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(&tmp.path().join("src"));
    let dir = quantized(
        &src,
        &tmp.path().join("sf3"),
        Some("sf3:nu=5"),
        Layout::Tquant,
    );
    Checkpoint::open(&dir).unwrap();
    rebuild(&dir.join("model.safetensors"), |t, _| {
        find(t, &format!("{Q}.codes")).bytes[10] = 0xf0;
    });
    let err = Checkpoint::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains(Q)
            && err.contains("code 15 at element 21"),
        "{err}"
    );
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "abc").unwrap();
    for args in [
        vec!["inspect", p(&dir)],
        vec!["verify", p(&src), p(&dir)],
        vec!["eval", p(&dir), "--text", p(&text)],
    ] {
        assert_clean_error(&tquant(&args), &[Q, "code 15"]);
    }
}

#[test]
fn reader_rejects_tampered_mxfp4_and_bnb_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(&tmp.path().join("src"));
    let mx = quantized(&src, &tmp.path().join("mx"), None, Layout::Mxfp4);
    let mx_cases: Vec<(&str, &str, Edit)> = vec![
        (
            "mx_blocks_15",
            "MXFP4 blocks",
            Box::new(|t, _| {
                let b = find(t, &format!("{Q}_blocks"));
                b.shape[2] = 15;
                b.bytes.truncate(32 * 2 * 15);
            }),
        ),
        (
            "mx_scales_short",
            "expected U8",
            Box::new(|t, _| {
                let s = find(t, &format!("{Q}_scales"));
                s.shape[0] -= 1;
                s.bytes.truncate(31 * 2);
            }),
        ),
        (
            "mx_zero_dim_overflow",
            "overflow",
            Box::new(|t, _| {
                t.push(T {
                    name: "z_blocks".into(),
                    dtype: "U8",
                    shape: vec![0, 1 << 60, 16],
                    bytes: vec![],
                });
                t.push(T {
                    name: "z_scales".into(),
                    dtype: "U8",
                    shape: vec![0, 1 << 60],
                    bytes: vec![],
                });
            }),
        ),
    ];
    for (name, needle, edit) in mx_cases {
        let dir = tmp.path().join(name);
        copy_dir(&mx, &dir);
        rebuild(&dir.join("model.safetensors"), |t, m| edit(t, m));
        let err = Checkpoint::open(&dir)
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains(needle),
            "{name}: {err}"
        );
        assert_clean_error(&tquant(&["inspect", p(&dir)]), &["model.safetensors"]);
    }

    // bitsandbytes NF4, hand-made as transformers saves it.
    let nf4: tquant::formats::Format = "nf4".parse().unwrap();
    let map = nf4.codebook().values().to_vec();
    let bnb = |state: &str, absmax: usize, map_len: usize| -> Vec<u8> {
        st_bytes(
            &[
                t(Q, "U8", &[1024, 1], vec![0x3c; 1024]),
                f32s(&format!("{Q}.absmax"), &[absmax], &vec![0.5; absmax]),
                f32s(&format!("{Q}.quant_map"), &[map_len], &map[..map_len]),
                t(
                    &format!("{Q}.quant_state.bitsandbytes__nf4"),
                    "U8",
                    &[state.len()],
                    state.as_bytes().to_vec(),
                ),
            ],
            &[],
        )
    };
    let ok_state =
        r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32, 64]}"#;
    let dir = tmp.path().join("bnb-ok");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), bnb(ok_state, 32, 16)).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let Weight::Quantized(q) = ckpt.get(Q).unwrap() else {
        panic!("bnb not detected")
    };
    assert_eq!(q.dequantize().unwrap().len(), 2048);
    let bnb_cases = [
        ("state_not_json", "{\"quant_type\": ", 32, 16, "not JSON"),
        (
            "blocksize_zero",
            r#"{"quant_type": "nf4", "blocksize": 0, "dtype": "bfloat16", "shape": [32, 64]}"#,
            32,
            16,
            "blocksize",
        ),
        (
            "shape_contradicts",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [64, 64]}"#,
            32,
            16,
            "expected U8",
        ),
        (
            "shape_negative",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32, -64]}"#,
            32,
            16,
            "shape",
        ),
        (
            "shape_float",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32.5, 64]}"#,
            32,
            16,
            "shape",
        ),
        (
            "dtype_unknown",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [32, 64]}"#,
            32,
            16,
            "not a float dtype",
        ),
        (
            "nested_offset_missing",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32, 64], "nested_blocksize": 256}"#,
            32,
            16,
            "nested_offset",
        ),
        (
            "nested_blocksize_zero",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32, 64], "nested_blocksize": 0, "nested_offset": 0.5}"#,
            32,
            16,
            "nested_blocksize",
        ),
        (
            // Double quantization stores the absmax as u8 codes; these are f32.
            "nested_absmax_not_codes",
            r#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [32, 64], "nested_blocksize": 256, "nested_offset": 0.5}"#,
            32,
            16,
            "expected U8",
        ),
        ("absmax_short", ok_state, 31, 16, "absmax"),
        ("quant_map_short", ok_state, 32, 8, "quant_map"),
    ];
    for (name, state, absmax, map_len, needle) in bnb_cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.safetensors"), bnb(state, absmax, map_len)).unwrap();
        let err = Checkpoint::open(&dir)
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(
            err.contains("model.safetensors") && err.contains(Q) && err.contains(needle),
            "{name}: {err}"
        );
        assert_clean_error(&tquant(&["inspect", p(&dir)]), &["model.safetensors", Q]);
    }
}

/// The bundled model converted to nf4 under `dir`, and a short text to evaluate it on.
fn tiny_lite_nf4(dir: &Path) -> (PathBuf, PathBuf) {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite");
    let text = dir.join("text.txt");
    std::fs::write(&text, "hello, hostile world").unwrap();
    let q = dir.join("q");
    assert_success(&tquant(&[
        "convert",
        p(&tiny),
        "-o",
        p(&q),
        "--format",
        "nf4",
    ]));
    (q, text)
}

/// A model whose weights disagree with its config.json: `eval` and `run` refuse it.
#[test]
fn eval_and_run_refuse_weights_that_contradict_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, text) = tiny_lite_nf4(tmp.path());
    let st = q.join("model.safetensors");
    let (tensors, meta) = tensors_of(&std::fs::read(&st).unwrap());
    let kept = tensors
        .iter()
        .find(|t| t.shape.len() == 2 && t.name.ends_with(".weight") && t.dtype != "U8")
        .expect("a kept matrix")
        .name
        .clone();
    let quant = meta
        .iter()
        .find_map(|(k, _)| k.strip_prefix("tquant.").filter(|n| *n != "version"))
        .expect("a quantized tensor")
        .to_string();

    // A kept matrix transposed (same bytes, other shape).
    let dir = tmp.path().join("transposed");
    copy_dir(&q, &dir);
    rebuild(&dir.join("model.safetensors"), |t, _| {
        let w = find(t, &kept);
        w.shape.reverse();
    });
    for args in [
        vec!["eval", p(&dir), "--text", p(&text), "--window", "8"],
        vec!["run", p(&dir), "--prompt", "hi", "--max-tokens", "2"],
    ] {
        assert_clean_error(&tquant(&args), &[&kept]);
    }
    // A quantized matrix missing altogether.
    let dir = tmp.path().join("missing");
    copy_dir(&q, &dir);
    rebuild(&dir.join("model.safetensors"), |t, m| {
        let parts = [".codes", ".scales", ".codebook"].map(|s| format!("{quant}{s}"));
        t.retain(|t| !parts.contains(&t.name));
        m.retain(|(k, _)| *k != format!("tquant.{quant}"));
    });
    let eval = |dir: &Path| tquant(&["eval", p(dir), "--text", p(&text), "--window", "8"]);
    assert_clean_error(&eval(&dir), &[&quant]);
    // The untouched conversion still evaluates.
    assert_success(&eval(&q));
}

/// A stored scale that is NaN or infinite would turn its block into NaN in every product: the
/// reader refuses the tensor when its data is read (verify, eval, run), naming the file, the
/// tensor and the block.
#[test]
fn non_finite_stored_scales_are_refused_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(&tmp.path().join("src"));
    let tq = quantized(&src, &tmp.path().join("tq"), Some("nf4"), Layout::Tquant);
    let mx = quantized(&src, &tmp.path().join("mx"), None, Layout::Mxfp4);
    let bnb = quantized(&src, &tmp.path().join("bnb"), None, Layout::Bnb);
    type Tamper = Box<dyn Fn(&mut Vec<T>)>;
    let cases: Vec<(&str, &Path, &str, &str, Tamper)> = vec![
        (
            "f16_nan",
            &tq,
            Q,
            "f16 row 5, block 0",
            Box::new(|t| find(t, &format!("{Q}.scales")).bytes[10..12].copy_from_slice(&[0, 0x7e])),
        ),
        (
            "f16_inf_expert",
            &tq,
            E,
            "expert 1, row 2, block 0",
            Box::new(|t| {
                let s = find(t, &format!("{E}.scales"));
                s.bytes[2 * (8 + 2)..2 * (8 + 2) + 2].copy_from_slice(&[0, 0x7c]);
            }),
        ),
        (
            "e8m0_255",
            &mx,
            Q,
            "e8m0 row 3, block 1",
            Box::new(|t| find(t, &format!("{Q}_scales")).bytes[3 * 2 + 1] = 255),
        ),
        (
            "absmax_inf",
            &bnb,
            Q,
            "absmax 7",
            Box::new(|t| {
                let a = find(t, &format!("{Q}.absmax"));
                a.bytes[28..32].copy_from_slice(&f32::INFINITY.to_le_bytes());
            }),
        ),
    ];
    for (name, good, tensor, at, tamper) in cases {
        assert!(
            Checkpoint::open(good).unwrap().get(tensor).is_ok(),
            "{name}"
        );
        let dir = tmp.path().join(name);
        copy_dir(good, &dir);
        rebuild(&dir.join("model.safetensors"), |t, _| tamper(t));
        let ckpt = Checkpoint::open(&dir).unwrap();
        let err = ckpt.get(tensor).map(|_| ()).expect_err(name).to_string();
        for needle in ["model.safetensors", tensor, at, "is not finite"] {
            assert!(err.contains(needle), "{name}: '{needle}' not in {err}");
        }
        assert_clean_error(
            &tquant(&["verify", p(&src), p(&dir)]),
            &[tensor, "is not finite"],
        );
    }
}

/// The same through the model runner, on a real converted model.
#[test]
fn eval_refuses_a_non_finite_stored_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let (q, text) = tiny_lite_nf4(tmp.path());
    let target = "model.layers.1.self_attn.o_proj.weight";
    rebuild(&q.join("model.safetensors"), |t, _| {
        find(t, &format!("{target}.scales")).bytes[0..2].copy_from_slice(&[0, 0x7e]);
    });
    assert_clean_error(
        &tquant(&["eval", p(&q), "--text", p(&text), "--window", "8"]),
        &[target, "is not finite"],
    );
}

const EMB: &str = "model.embed_tokens.weight";

/// A q8_0 tensor (the embeddings, stored so by default) that is cut short, mis-shaped,
/// mis-described or holds a non-finite scale is refused, naming the file and the tensor.
#[test]
fn tampered_q8_0_tensors_are_refused_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("model.safetensors"),
        st_bytes(
            &[
                f32s(EMB, &[40, 64], &values(2560, 4)),
                f32s(Q, &[32, 64], &values(2048, 1)),
            ],
            &[],
        ),
    )
    .unwrap();
    let good = quantized(&src, &tmp.path().join("good"), None, Layout::Tquant);
    let ckpt = Checkpoint::open(&good).unwrap();
    let Weight::Quantized(v) = ckpt.get(EMB).unwrap() else {
        panic!("{EMB} is stored as q8_0 by default")
    };
    assert!(v.info.is_q8_0());
    drop(ckpt);
    let info = |f: fn(&mut Value)| -> Edit { Box::new(move |_, m| edit_info(m, EMB, f)) };
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "q8_codes_short",
            "",
            Box::new(|t, _| {
                let c = find(t, &format!("{EMB}.codes"));
                c.shape[0] -= 1;
                c.bytes.truncate(39 * 64);
            }),
        ),
        (
            "q8_codes_u8",
            "I8",
            Box::new(|t, _| find(t, &format!("{EMB}.codes")).dtype = "U8"),
        ),
        (
            "q8_codes_packed",
            "",
            Box::new(|t, _| {
                let c = find(t, &format!("{EMB}.codes"));
                c.shape[1] = 32;
                c.bytes.truncate(40 * 32);
            }),
        ),
        (
            "q8_scales_per_64",
            "",
            Box::new(|t, _| {
                let s = find(t, &format!("{EMB}.scales"));
                s.shape[1] = 1;
                s.bytes.truncate(40 * 2);
            }),
        ),
        (
            "q8_scales_missing",
            "lacks its part",
            Box::new(|t, _| t.retain(|t| t.name != format!("{EMB}.scales"))),
        ),
        (
            "q8_bits_4",
            "q8_0 has 8 bits",
            info(|v| v["bits"] = json!(4)),
        ),
        ("q8_block_64", "block 64", info(|v| v["block"] = json!(64))),
        (
            "q8_matrix_format",
            "format 'nf4' in a q8_0 tensor",
            info(|v| v["matrices"][0]["format"] = json!("nf4")),
        ),
    ];
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "abc").unwrap();
    for (name, needle, edit) in cases {
        let dir = tmp.path().join(name);
        copy_dir(&good, &dir);
        rebuild(&dir.join("model.safetensors"), |t, m| edit(t, m));
        let err = Checkpoint::open(&dir)
            .map(|_| ())
            .expect_err(name)
            .to_string();
        for n in ["model.safetensors", EMB, needle] {
            assert!(err.contains(n), "{name}: '{n}' not in {err}");
        }
        for args in [
            vec!["inspect", p(&dir)],
            vec!["verify", p(&src), p(&dir)],
            vec!["eval", p(&dir), "--text", p(&text)],
        ] {
            assert_clean_error(&tquant(&args), &["model.safetensors", EMB, needle]);
        }
    }

    // A file cut short.
    let dir = tmp.path().join("q8_truncated");
    copy_dir(&good, &dir);
    let file = dir.join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let err = Checkpoint::open(&dir).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert_clean_error(&tquant(&["inspect", p(&dir)]), &["model.safetensors"]);

    // A NaN scale: refused when the tensor is read, naming the block.
    let dir = tmp.path().join("q8_nan_scale");
    copy_dir(&good, &dir);
    rebuild(&dir.join("model.safetensors"), |t, _| {
        let s = find(t, &format!("{EMB}.scales"));
        s.bytes[2 * 5..2 * 5 + 2].copy_from_slice(&[0, 0x7e]);
    });
    let err = Checkpoint::open(&dir)
        .unwrap()
        .get(EMB)
        .map(|_| ())
        .unwrap_err();
    let err = err.to_string();
    for n in ["model.safetensors", EMB, "row 2, block 1", "is not finite"] {
        assert!(err.contains(n), "'{n}' not in {err}");
    }
    assert_clean_error(
        &tquant(&["verify", p(&src), p(&dir)]),
        &[EMB, "is not finite"],
    );
}

/// A table per row (`learned_row`) whose `.row_tables` part has too few rows, the wrong dtype,
/// a non-finite value or is missing: refused at open, naming the file and the tensor, by the
/// reader and by inspect, verify and eval.
#[test]
fn tampered_row_tables_are_refused_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(&tmp.path().join("src"));
    let good = tmp.path().join("good");
    let opts = ConvertOptions::builder()
        .format(tquant::convert::FormatChoice::LearnedRow)
        .build()
        .unwrap();
    convert(&src, &good, &opts, &RunOptions::default(), &NoProgress).unwrap();
    let ckpt = Checkpoint::open(&good).unwrap();
    let Weight::Quantized(q) = ckpt.get(E).unwrap() else {
        panic!("{E} is quantized")
    };
    assert_eq!(q.row_tables(1).map(<[f32]>::len), Some(8 * 16));
    drop(ckpt);
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, "abc").unwrap();
    type RowEdit = fn(&mut Vec<T>);
    let cases: [(&str, &str, RowEdit); 5] = [
        ("row_tables_one_row_short", "", |t| {
            let rt = find(t, &format!("{Q}.row_tables"));
            rt.shape = vec![31, 16];
            rt.bytes.truncate(31 * 32);
        }),
        ("row_tables_per_expert_flattened", "", |t| {
            let rt = find(t, &format!("{E}.row_tables"));
            rt.shape = vec![16 * 16];
        }),
        ("row_tables_not_f16", "", |t| {
            let rt = find(t, &format!("{Q}.row_tables"));
            rt.dtype = "BF16";
        }),
        ("row_tables_nan", "not finite", |t| {
            let rt = find(t, &format!("{Q}.row_tables"));
            rt.bytes[2..4].copy_from_slice(&0x7e00u16.to_le_bytes());
        }),
        ("row_tables_missing", "row_tables", |t| {
            t.retain(|t| t.name != format!("{Q}.row_tables"));
        }),
    ];
    for (name, needle, edit) in cases {
        let dir = tmp.path().join(name);
        copy_dir(&good, &dir);
        rebuild(&dir.join("model.safetensors"), |t, _| edit(t));
        let err = Checkpoint::open(&dir)
            .map(|_| ())
            .expect_err(name)
            .to_string();
        assert!(err.contains("model.safetensors"), "{name}: {err}");
        assert!(err.contains("row_tables"), "{name}: {err}");
        assert!(
            err.contains(Q) || err.contains(E),
            "{name}: the tensor is named: {err}"
        );
        assert!(err.contains(needle), "{name}: '{needle}' not in {err}");
        for args in [
            vec!["inspect", p(&dir)],
            vec!["verify", p(&src), p(&dir)],
            vec!["eval", p(&dir), "--text", p(&text)],
        ] {
            assert_clean_error(&tquant(&args), &["model.safetensors", "row_tables"]);
        }
    }
}
