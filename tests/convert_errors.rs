//! Bad inputs give typed errors that name the file and the tensor, never a panic; the CLI keeps
//! its contract (JSON fields, refusal to overwrite, exit status).

use crate::convert_support;

use convert_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use tquant::convert::{Checkpoint, ConvertError};

fn open_err(path: &Path) -> String {
    match Checkpoint::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A valid single-file checkpoint's bytes, and its header length.
fn small_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let specs = vec![
        Spec {
            name: "a".into(),
            dtype: tquant::convert::Dtype::F32,
            shape: vec![2, 3],
            values: vec![1.0; 6],
        },
        Spec {
            name: "b".into(),
            dtype: tquant::convert::Dtype::BF16,
            shape: vec![4],
            values: vec![2.0; 4],
        },
    ];
    write_checkpoint(dir, &[specs], &serde_json::json!({}));
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn with_header(bytes: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let text = h.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn reader_rejects_malformed_files_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, good) = small_file(tmp.path());
    let bad = tmp.path().join("bad.safetensors");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..good.len() - 3].to_vec(), "do not lie inside"),
        (good[..5].to_vec(), "shorter than the 8-byte"),
        (
            {
                let mut b = good.clone();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            "exceeds",
        ),
        (
            with_header(&good, |h| h["a"]["data_offsets"][1] = 9999.into()),
            "'a'",
        ),
        (
            with_header(&good, |h| h["a"]["shape"] = serde_json::json!([3, 3])),
            "'a'",
        ),
        (
            with_header(&good, |h| h["b"]["dtype"] = "Q4".into()),
            "unknown dtype",
        ),
        (
            with_header(&good, |h| {
                h["b"]["data_offsets"] = serde_json::json!([0, 8])
            }),
            "overlaps",
        ),
        (
            with_header(&good, |h| h["a"]["shape"] = serde_json::json!([-1])),
            "'a'",
        ),
        (
            {
                let mut b = good.clone();
                b[9] = b'[';
                b
            },
            "not JSON",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&bad, &bytes).unwrap();
        let e = open_err(&bad);
        assert!(
            e.contains("bad.safetensors") && e.contains(want),
            "want '{want}' in: {e}"
        );
    }
    assert!(Checkpoint::open(&path).is_ok());
}

#[test]
fn reader_rejects_inconsistent_shards_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write_checkpoint(&dir, &moe_model(false, 5), &moe_config());
    let index_path = dir.join("model.safetensors.index.json");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut i = index.clone();
        f(&mut i);
        std::fs::write(&index_path, i.to_string()).unwrap();
        open_err(&dir)
    };
    let e = edit(&|i| i["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors".into());
    assert!(e.contains("ghost.weight") && e.contains("absent"), "{e}");
    let e =
        edit(&|i| i["weight_map"]["lm_head.weight"] = "model-00002-of-00003.safetensors".into());
    assert!(
        e.contains("lm_head.weight") && e.contains("index says"),
        "{e}"
    );
    let e = edit(&|i| i["weight_map"]["lm_head.weight"] = "../evil.safetensors".into());
    assert!(e.contains("not a .safetensors file name"), "{e}");
    let e =
        edit(&|i| i["weight_map"]["lm_head.weight"] = "model-00009-of-00003.safetensors".into());
    assert!(e.contains("model-00009-of-00003.safetensors"), "{e}");
    std::fs::write(&index_path, "{").unwrap();
    assert!(open_err(&dir).contains("index is not JSON"));
    std::fs::write(&index_path, index.to_string()).unwrap();
    // The same tensor in two shards.
    let mut shards = moe_model(false, 5);
    let first = shards[0][0].clone();
    shards[1].push(first);
    let dup = tmp.path().join("dup");
    write_checkpoint(&dup, &shards, &moe_config());
    assert!(
        open_err(&dup).contains("also present in"),
        "{}",
        open_err(&dup)
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        Checkpoint::open(&empty),
        Err(ConvertError::NotACheckpoint { .. })
    ));
}

#[test]
fn reader_rejects_corrupt_quantized_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_checkpoint(&input, &[moe_model(true, 6).concat()], &moe_config());
    let out = tmp.path().join("q");
    let opts = tquant::convert::ConvertOptions::default();
    tquant::convert::convert(
        &input,
        &out,
        &opts,
        &Default::default(),
        &tquant::convert::NoProgress,
    )
    .unwrap();
    let file = out.join("model.safetensors");
    let good = std::fs::read(&file).unwrap();
    let key = "tquant.model.layers.1.mlp.experts.down_proj";
    let meta = |f: &dyn Fn(&mut Value)| {
        with_header(&good, |h| {
            let mut info: Value =
                serde_json::from_str(h["__metadata__"][key].as_str().unwrap()).unwrap();
            f(&mut info);
            h["__metadata__"][key] = info.to_string().into();
        })
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            meta(&|i| i["shape"] = serde_json::json!([4, 64, 40])),
            "expected U8",
        ),
        (meta(&|i| i["block"] = 0.into()), "out of range"),
        (meta(&|i| i["version"] = 99.into()), "version 99"),
        (meta(&|i| i["scale_dtype"] = "f8".into()), "not valid"),
        (
            meta(&|i| i["matrices"].as_array_mut().unwrap().truncate(1)),
            "1 matrices",
        ),
        (
            meta(&|i| i["shape"] = serde_json::json!([64])),
            "2-D or 3-D",
        ),
        (
            with_header(&good, |h| h["__metadata__"][key] = "{".into()),
            "not valid",
        ),
        (
            with_header(&good, |h| {
                let m = h.as_object_mut().unwrap();
                let e = m
                    .remove("model.layers.1.mlp.experts.down_proj.codebook")
                    .unwrap();
                m.insert("renamed.codebook".into(), e);
            }),
            "lacks its part",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let e = match Checkpoint::open(&out) {
            Ok(_) => panic!("opened with a corrupt description (want '{want}')"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("down_proj") && e.contains(want),
            "want '{want}' in: {e}"
        );
    }
    // A NaN in a codebook.
    std::fs::write(&file, &good).unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    let (_, entry) = ckpt
        .locate("model.layers.1.mlp.experts.down_proj.codebook")
        .unwrap();
    let mut b = good.clone();
    b[entry.offset as usize..entry.offset as usize + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    drop(ckpt);
    std::fs::write(&file, &b).unwrap();
    assert!(open_err(&out).contains("not finite"));
}

fn tquant_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tquant"))
}

#[test]
fn cli_contract_convert_inspect_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite");
    let out = tmp.path().join("q");
    let o = tquant_bin()
        .arg("convert")
        .arg(&tiny)
        .arg("-o")
        .arg(&out)
        .args(["--format", "nf4", "--json", "--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "tensors",
        "quantized",
        "q8_0",
        "kept",
        "skipped",
        "input_bytes",
        "output_bytes",
        "seconds",
        "mb_per_s",
        "bits_per_weight",
    ] {
        assert!(s.get(k).is_some(), "convert --json lacks {k}");
    }
    // 69 decoder matrices in nf4, the embeddings and lm_head in q8_0 (the default).
    assert_eq!(s["quantized"], 71);
    assert_eq!(s["q8_0"], 2);
    // An existing output is refused (exit status 1, message), then replaced with --force.
    let o = tquant_bin()
        .arg("convert")
        .arg(&tiny)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    let o = tquant_bin()
        .arg("convert")
        .arg(&tiny)
        .arg("-o")
        .arg(&out)
        .args(["--force", "--block", "row", "--scale-dtype", "bf16"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = tquant_bin()
        .arg("inspect")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success());
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(i["total_bytes"].as_u64().unwrap() > 0 && i["bits_per_weight"].as_f64().unwrap() > 4.0);
    let t = i["tensors"].as_array().unwrap();
    assert_eq!(t.len(), 83);
    for k in [
        "name",
        "shape",
        "dtype",
        "format",
        "block",
        "scale_dtype",
        "bits_per_weight",
        "nu",
    ] {
        assert!(
            t.iter().all(|t| t.get(k).is_some()),
            "inspect --json lacks {k}"
        );
    }
    let q = t
        .iter()
        .find(|t| t["name"] == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(
        (q["block"].as_u64(), q["scale_dtype"].as_str()),
        (Some(192), Some("bf16"))
    );
    // The default preset, balanced: a table learned per matrix, listed as its values.
    assert!(q["format"].as_str().unwrap().starts_with("custom:-1,"));
    // q8_0 keeps its blocks of 32 with f16 scales whatever --block and --scale-dtype say.
    let e = t.iter().find(|t| t["name"] == "lm_head.weight").unwrap();
    assert_eq!(e["format"], "q8_0");
    assert_eq!(
        (e["block"].as_u64(), e["scale_dtype"].as_str()),
        (Some(32), Some("f16"))
    );
    assert_eq!(e["bits_per_weight"], 8.5);
    assert_eq!(i["q8_0"], 2);

    let o = tquant_bin()
        .arg("verify")
        .arg(&tiny)
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = v["tensors"].as_array().unwrap();
    assert_eq!(t.len(), 71);
    for k in ["name", "format", "nmse", "sqnr_db", "max_abs_err", "cosine"] {
        assert!(
            t.iter().all(|t| t.get(k).is_some()),
            "verify --json lacks {k}"
        );
    }
    let nmse = t[0]["nmse"].as_f64().unwrap();
    assert!((t[0]["sqnr_db"].as_f64().unwrap() + 10.0 * nmse.log10()).abs() < 1e-9);

    // Errors are reported, not panics.
    let o = tquant_bin()
        .args(["inspect", "/nonexistent/ckpt"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/ckpt"));
    let o = tquant_bin()
        .arg("convert")
        .arg(&tiny)
        .arg("-o")
        .arg(tmp.path().join("x"))
        .args(["--nu", "3", "--format", "nf4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--nu"));
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn killed_run_never_leaves_a_complete_looking_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let mut rng = tquant::formats::sample::Rng::new(9);
    let specs: Vec<Spec> = (0..8)
        .map(|j| Spec {
            name: format!("model.layers.{j}.mlp.down_proj.weight"),
            dtype: tquant::convert::Dtype::BF16,
            shape: vec![1024, 1024],
            values: rng.student_t_vec(1 << 20, 5.0),
        })
        .collect();
    write_checkpoint(&input, &[specs], &serde_json::json!({}));
    let out = tmp.path().join("q");
    for delay_ms in [50, 300] {
        let mut child = tquant_bin()
            .arg("convert")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(["--threads", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Either nothing, or a complete checkpoint: never a partial one.
        if out.exists() {
            let q = Checkpoint::open(&out).unwrap();
            let report =
                tquant::convert::inspect::verify(&Checkpoint::open(&input).unwrap(), &q).unwrap();
            assert_eq!(report.tensors.len(), 8);
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    // A temporary directory left by a killed run does not block the next run.
    let o = tquant_bin()
        .arg("convert")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Checkpoint::open(&out).is_ok());
}

#[test]
fn conflicting_options_and_name_collisions_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let w = |name: &str| Spec {
        name: name.into(),
        dtype: tquant::convert::Dtype::F32,
        shape: vec![4, 32],
        values: (0..128).map(|i| i as f32 - 60.0).collect(),
    };
    write_checkpoint(
        &input,
        &[vec![
            w("model.layers.0.mlp.down_proj.weight"),
            w("model.layers.0.mlp.down_proj.weight.codes"),
        ]],
        &serde_json::json!({}),
    );
    let out = tmp.path().join("q");
    let run = |o: &tquant::convert::ConvertOptions| {
        tquant::convert::convert(
            &input,
            &out,
            o,
            &Default::default(),
            &tquant::convert::NoProgress,
        )
        .unwrap_err()
        .to_string()
    };
    let e = run(&tquant::convert::ConvertOptions::default());
    assert!(
        e.contains("model.layers.0.mlp.down_proj.weight.codes") && e.contains("two tensors"),
        "{e}"
    );
    // int4_full needs signed scales, which E8M0 cannot store: refused up front.
    let e = tquant::convert::ConvertOptions::from_args(
        Some("int4_full"),
        None,
        None,
        Some("e8m0"),
        tquant::convert::Layout::Tquant,
        Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("e8m0"), "{e}");
    assert!(!out.exists());
}
