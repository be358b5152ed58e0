//! FP8 checkpoints (DeepSeek-V3/R1, Kimi-K2 layout: F8_E4M3 weights with `_scale_inv` block
//! scales) as input: dequantization bit for bit against torch (scripts/fixtures/fp8.py), the
//! converter, `verify`, `inspect`, `--drop`, and the model reading them like a float checkpoint.

use crate::convert_support;
use crate::support;

use convert_support::{write_checkpoint, Spec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{path, root, stderr_of_failure, stdout_ok};
use tquant::convert::fp8::{e4m3_to_f32, e5m2_to_f32};
use tquant::convert::{Checkpoint, Dtype};

fn data() -> PathBuf {
    root().join("tests/data/convert/fp8")
}

fn fp8_tiny() -> PathBuf {
    data().join("tiny-lite")
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan())
}

/// FNV-1a 64 of f32 little-endian bytes (the fixture script's digest of torch's values).
fn fnv1a64(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in values.iter().flat_map(|v| v.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

fn torch_digests() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(data().join("digests.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["fnv1a64_f32"].as_object().unwrap().clone()
}

#[test]
fn every_fp8_code_decodes_to_torchs_value() {
    let reference = Checkpoint::open(data().join("ragged_reference.safetensors")).unwrap();
    let e4m3 = reference.get("e4m3_table").unwrap().to_f32().unwrap();
    let e5m2 = reference.get("e5m2_table").unwrap().to_f32().unwrap();
    let ours: Vec<f32> = (0..=255u8).map(e4m3_to_f32).collect();
    assert!(same_bits(&ours, &e4m3), "e4m3 differs from torch");
    let ours: Vec<f32> = (0..=255u8).map(e5m2_to_f32).collect();
    assert!(same_bits(&ours, &e5m2), "e5m2 differs from torch");
    assert_eq!(e4m3.iter().filter(|v| v.is_nan()).count(), 2);
}

#[test]
fn ragged_blocks_dequantize_bit_for_bit_like_torch() {
    let ckpt = Checkpoint::open(data().join("ragged.safetensors")).unwrap();
    let reference = Checkpoint::open(data().join("ragged_reference.safetensors")).unwrap();
    // The scales are part of their weights, not tensors of their own.
    assert_eq!(ckpt.names().collect::<Vec<_>>(), ["a.weight", "b.weight"]);
    for (name, shape) in [("a.weight", [300, 200]), ("b.weight", [129, 257])] {
        let w = ckpt.get(name).unwrap();
        assert_eq!(w.shape(), shape);
        let want = reference.get(name).unwrap().to_f32().unwrap();
        assert!(same_bits(&w.to_f32().unwrap(), &want), "{name}");
        assert!(same_bits(&ckpt.dense_f32(name).unwrap(), &want), "{name}");
    }
}

#[test]
fn sharded_fp8_tiny_lite_dequantizes_like_torch() {
    let ckpt = Checkpoint::open(fp8_tiny()).unwrap();
    assert!(ckpt.has_fp8() && !ckpt.is_quantized());
    assert!(ckpt.names().all(|n| !n.ends_with("_scale_inv")));
    let digests = torch_digests();
    assert!(digests.len() > 40, "{}", digests.len());
    // Layer 1's scales sit in the other shard.
    let q = "model.layers.1.self_attn.q_proj.weight";
    assert_ne!(ckpt.shard_of(q), ckpt.shard_of(ckpt.fp8_scales(q).unwrap()));
    for (name, digest) in &digests {
        let t = ckpt.raw(name).unwrap();
        assert_eq!(t.dtype, Dtype::F8_E4M3, "{name}");
        let values = ckpt.get(name).unwrap().to_f32().unwrap();
        assert_eq!(&fnv1a64(&values), digest.as_str().unwrap(), "{name}");
    }
    let inspect: Value =
        serde_json::from_str(&stdout_ok(&["inspect", path(&fp8_tiny()), "--json"])).unwrap();
    let rows = inspect["tensors"].as_array().unwrap();
    assert_eq!(rows.len(), ckpt.names().count());
    let row = rows.iter().find(|r| r["name"] == q).unwrap();
    assert_eq!(row["dtype"], "F8_E4M3");
}

fn convert(out: &Path, extra: &[&str]) -> Value {
    let input = fp8_tiny();
    let mut args = vec!["convert", path(&input), "-o", path(out), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&stdout_ok(&args)).unwrap()
}

/// Every tensor name in every header of a checkpoint directory.
fn stored_names(dir: &Path) -> Vec<String> {
    let ckpt = Checkpoint::open(dir).unwrap();
    ckpt.raw_names().map(str::to_string).collect()
}

fn config_of(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn verify(quantized: &Path) -> Value {
    serde_json::from_str(&stdout_ok(&[
        "verify",
        path(&fp8_tiny()),
        path(quantized),
        "--json",
    ]))
    .unwrap()
}

#[test]
fn converts_fp8_to_nf4_and_sf4_without_scale_inv_or_fp8_config() {
    let tmp = tempfile::tempdir().unwrap();
    let fp8_weights = torch_digests().len();
    // The embeddings and lm_head (bf16 in the FP8 original) at source precision: every
    // quantized tensor is an FP8 weight.
    for (dir, extra, bound) in [
        ("nf4", &["--format", "nf4", "--keep-as", "source"][..], 0.02),
        ("sf4", &["--keep-as", "source"][..], 0.02),
    ] {
        let out = tmp.path().join(dir);
        let summary = convert(&out, extra);
        assert_eq!(summary["quantized"].as_u64().unwrap() as usize, fp8_weights);
        assert!(summary["dequantized"].as_array().unwrap().is_empty());
        assert!(summary["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["name"].as_str().unwrap().ends_with("_scale_inv")));
        assert!(stored_names(&out).iter().all(|n| !n.contains("_scale_inv")));
        let index = std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap();
        assert!(!index.contains("_scale_inv"));
        let q = &config_of(&out)["quantization_config"];
        assert_eq!(q["quant_method"], "tquant", "{q}");
        assert!(
            q.get("fmt").is_none() && q.get("weight_block_size").is_none(),
            "{q}"
        );
        let v = verify(&out);
        let nmse = v["nmse"].as_f64().unwrap();
        assert!(nmse > 0.0 && nmse < bound, "{dir}: nmse {nmse}");
        assert_eq!(v["tensors"].as_array().unwrap().len(), fp8_weights);
        assert!(v["kept_different"].as_array().unwrap().is_empty(), "{v}");
        assert!(v["missing"].as_array().unwrap().is_empty(), "{v}");
        let ckpt = Checkpoint::open(&out).unwrap();
        let info = ckpt
            .quant_info("model.layers.0.self_attn.o_proj.weight")
            .unwrap();
        assert_eq!(info.dtype, "F8_E4M3");
    }
}

#[test]
fn an_excluded_fp8_weight_is_written_dequantized_as_bf16() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let summary = convert(&out, &["--format", "nf4", "--exclude", "*.o_proj.weight"]);
    let dequantized: Vec<&str> = summary["dequantized"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(dequantized.len(), 3, "{dequantized:?}");
    let text = stdout_ok(&[
        "convert",
        path(&fp8_tiny()),
        "-o",
        path(&tmp.path().join("text")),
        "--exclude",
        "*.o_proj.weight",
    ]);
    assert!(
        text.contains("3 FP8 tensor(s) kept unquantized, written dequantized as BF16"),
        "{text}"
    );
    let original = Checkpoint::open(fp8_tiny()).unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    for name in dequantized {
        let t = ckpt.raw(name).unwrap();
        assert_eq!(t.dtype, Dtype::BF16, "{name}");
        let want: Vec<f32> = original
            .get(name)
            .unwrap()
            .to_f32()
            .unwrap()
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert!(same_bits(&t.to_f32().unwrap(), &want), "{name}");
    }
    let v = verify(&out);
    assert_eq!(v["kept_dequantized"], 3, "{v}");
    assert!(v["kept_different"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn drop_leaves_tensors_out_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let summary = convert(
        &out,
        &["--drop", "model.layers.2.*", "--drop", "lm_head.weight"],
    );
    let mut dropped: Vec<&str> = summary["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    dropped.sort();
    let original = Checkpoint::open(fp8_tiny()).unwrap();
    let want: Vec<&str> = original
        .names()
        .filter(|n| n.starts_with("model.layers.2.") || *n == "lm_head.weight")
        .collect();
    assert_eq!(dropped, want);
    let stored = stored_names(&out);
    assert!(stored
        .iter()
        .all(|n| !n.starts_with("model.layers.2.") && n != "lm_head.weight"));
    assert!(stored.iter().any(|n| n.starts_with("model.layers.1.")));
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["metadata"]["dropped"].as_array().unwrap().len(),
        want.len()
    );
    assert_eq!(
        config_of(&out)["quantization_config"]["drop"],
        serde_json::json!(["model.layers.2.*", "lm_head.weight"])
    );
    let text = stdout_ok(&[
        "convert",
        path(&fp8_tiny()),
        "-o",
        path(&tmp.path().join("text")),
        "--drop",
        "lm_head.weight",
    ]);
    assert!(
        text.contains("dropped 1 tensor(s) (--drop): lm_head.weight"),
        "{text}"
    );
    // A glob that names nothing is a mistake, not a no-op.
    let err = stderr_of_failure(&[
        "convert",
        path(&fp8_tiny()),
        "-o",
        path(&tmp.path().join("none")),
        "--drop",
        "model.layers.61.*",
    ]);
    assert!(
        err.contains("--drop 'model.layers.61.*' matches no tensor"),
        "{err}"
    );
    assert!(!tmp.path().join("none").exists());
}

/// The FP8 checkpoint with every weight as f32: torch's dequantized values (checked against the
/// fixture's digests) for the FP8 ones, the stored values for the rest.
fn f32_copy(dir: &Path) {
    let ckpt = Checkpoint::open(fp8_tiny()).unwrap();
    let digests = torch_digests();
    let specs: Vec<Spec> = ckpt
        .names()
        .map(|name| {
            let w = ckpt.get(name).unwrap();
            let values = w.to_f32().unwrap();
            if let Some(d) = digests.get(name) {
                assert_eq!(&fnv1a64(&values), d.as_str().unwrap(), "{name}");
            }
            Spec {
                name: name.to_string(),
                dtype: Dtype::F32,
                shape: w.shape().to_vec(),
                values,
            }
        })
        .collect();
    let mut config = ckpt.config().unwrap().clone();
    config
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    write_checkpoint(dir, &[specs], &config);
}

#[test]
fn logits_and_eval_of_the_fp8_original_equal_its_f32_dequantization() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_dir = tmp.path().join("f32");
    f32_copy(&f32_dir);
    let logits = |m: &Path| stdout_ok(&["logits", path(m), "--tokens", "3,17,92,200,41"]);
    let fp8 = logits(&fp8_tiny());
    assert_eq!(fp8, logits(&f32_dir));
    assert!(fp8.len() > 1000);
    let text = root().join("tests/data/model/heldout_head.txt");
    let eval = |m: &Path| {
        let out = stdout_ok(&[
            "eval",
            path(m),
            "--text",
            path(&text),
            "--window",
            "128",
            "--max-bytes",
            "1024",
            "--json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["bits_per_byte"].as_f64().unwrap()
    };
    let bpb = eval(&fp8_tiny());
    assert_eq!(bpb, eval(&f32_dir));
    assert!(bpb > 0.5 && bpb < 8.0, "{bpb}");
}

/// The stored bytes of every tensor of a converted checkpoint, by name.
fn stored_tensors(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let ckpt = Checkpoint::open(dir).unwrap();
    ckpt.raw_names()
        .map(|n| (n.to_string(), ckpt.raw(n).unwrap().bytes.to_vec()))
        .collect()
}

#[test]
fn calibrated_conversion_of_fp8_equals_that_of_its_f32_dequantization() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_dir = tmp.path().join("f32");
    f32_copy(&f32_dir);
    let text = root().join("tests/data/model/heldout_head.txt");
    let calibrated = |input: &Path, out: &Path| {
        stdout_ok(&[
            "convert",
            path(input),
            "-o",
            path(out),
            "--format",
            "nf4",
            "--calibrate",
            path(&text),
            "--calibrate-offset",
            "60000",
            "--calibrate-bytes",
            "1500",
            "--calibrate-window",
            "256",
            "--keep-as",
            "source",
        ])
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    calibrated(&fp8_tiny(), &a);
    calibrated(&f32_dir, &b);
    let (a, b) = (stored_tensors(&a), stored_tensors(&b));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let (mut na, mut nb) = (names(&a), names(&b));
    na.sort();
    nb.sort();
    assert_eq!(na, nb);
    let b: std::collections::HashMap<_, _> = b.into_iter().collect();
    // Kept tensors differ in dtype (bf16 in the FP8 original, f32 in the copy); every
    // quantized part is the same bytes.
    let mut same = 0;
    for (name, bytes) in &a {
        if name.ends_with(".codes") || name.ends_with(".scales") {
            assert!(&b[name] == bytes, "{name}");
            same += 1;
        }
    }
    assert_eq!(same, 2 * torch_digests().len());
}
