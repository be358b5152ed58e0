//! Hostile FP8 checkpoints: copies of the committed FP8 tiny-lite (tests/data/convert/fp8) with
//! one thing wrong each. Every one is a clean error naming the file and the tensor, from the
//! command that meets it first (opening checks headers; reading checks codes and scale values).

use crate::hostile_support;

use hostile_support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tquant::convert::{Checkpoint, Dtype};

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";
/// A layer-0 weight: it and its scales are in shard 1.
const W0: &str = "model.layers.0.self_attn.o_proj.weight";
/// A layer-1 weight in shard 1 whose scales are in shard 2.
const W1: &str = "model.layers.1.self_attn.q_proj.weight";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/fp8/tiny-lite")
}

/// A copy of the FP8 tiny-lite after `edit` rewrote one shard's tensors.
fn hostile(dir: &Path, shard: &str, edit: impl FnOnce(&mut Vec<T>)) -> PathBuf {
    let model = dir.join("model");
    copy_dir(&fixture(), &model);
    rebuild(&model.join(shard), |tensors, _| edit(tensors));
    model
}

fn scale(name: &str) -> String {
    format!("{name}_scale_inv")
}

/// Converting (which reads every weight) fails cleanly naming all of `needles`.
fn convert_fails(model: &Path, needles: &[&str]) -> String {
    let out = model.with_file_name("out");
    let err = assert_clean_error(
        &tquant(&["convert", p(model), "-o", p(&out), "--format", "nf4"]),
        needles,
    );
    assert!(!out.exists(), "a failed conversion left {}", out.display());
    err
}

#[test]
fn nan_codes_in_a_weight_are_refused_where_it_is_read() {
    for code in [0x7Fu8, 0xFF] {
        let tmp = tempfile::tempdir().unwrap();
        let model = hostile(tmp.path(), SHARD1, |t| {
            find(t, W0).bytes[192 + 5] = code;
        });
        // Opening reads headers only; the codes are checked when the weight is read.
        assert!(Checkpoint::open(&model).is_ok());
        let first = format!("0x{code:02X} at [1, 5]");
        convert_fails(&model, &[SHARD1, W0, "NaN", &first]);
        assert_clean_error(
            &tquant(&["logits", p(&model), "--tokens", "1,2"]),
            &[SHARD1, W0, "NaN"],
        );
    }
}

#[test]
fn scales_of_the_wrong_shape_or_dtype_are_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    // W1 is [288, 192]: scales [3, 2]; stored [2, 3] they hold as many bytes.
    let model = hostile(tmp.path(), SHARD2, |t| {
        find(t, &scale(W1)).shape = vec![2, 3];
    });
    let s = scale(W1);
    assert_clean_error(
        &tquant(&["inspect", p(&model)]),
        &[SHARD2, &s, "must be F32 [3, 2]", "found F32 [2, 3]"],
    );

    let tmp = tempfile::tempdir().unwrap();
    let model = hostile(tmp.path(), SHARD2, |t| {
        let s = find(t, &scale(W1));
        s.dtype = "BF16";
        s.bytes.truncate(s.bytes.len() / 2);
    });
    assert_clean_error(
        &tquant(&["inspect", p(&model)]),
        &[SHARD2, &s, "must be F32 [3, 2]", "found BF16 [3, 2]"],
    );
}

#[test]
fn a_missing_scale_is_refused_naming_the_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let model = hostile(tmp.path(), SHARD2, |t| t.retain(|t| t.name != scale(W1)));
    let index = model.join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["weight_map"]
        .as_object_mut()
        .unwrap()
        .remove(&scale(W1))
        .unwrap();
    std::fs::write(&index, v.to_string()).unwrap();
    let s = scale(W1);
    for args in [
        vec!["inspect", p(&model)],
        vec!["logits", p(&model), "--tokens", "1"],
    ] {
        assert_clean_error(
            &tquant(&args),
            &[SHARD1, W1, "without its block scales", &s],
        );
    }
}

#[test]
fn non_finite_or_negative_scales_are_refused_when_read() {
    for (bad, shown) in [(f32::INFINITY, "inf"), (f32::NAN, "NaN"), (-0.5, "-0.5")] {
        let tmp = tempfile::tempdir().unwrap();
        let model = hostile(tmp.path(), SHARD2, |t| {
            find(t, &scale(W1)).bytes[4..8].copy_from_slice(&bad.to_le_bytes());
        });
        let s = scale(W1);
        let what = format!("block scale 1 is {shown}");
        convert_fails(&model, &[SHARD2, &s, &what, "finite and not negative"]);
        assert_clean_error(
            &tquant(&["logits", p(&model), "--tokens", "1"]),
            &[SHARD2, &s, &what],
        );
    }
}

#[test]
fn an_fp8_tensor_that_is_not_2d_is_refused() {
    for shape in [vec![1, 192, 512], vec![192 * 512]] {
        let tmp = tempfile::tempdir().unwrap();
        let model = hostile(tmp.path(), SHARD1, |t| {
            find(t, "model.layers.0.mlp.down_proj.weight").shape = shape.clone();
        });
        let found = format!("{shape:?}");
        assert_clean_error(
            &tquant(&["inspect", p(&model)]),
            &[SHARD1, "model.layers.0.mlp.down_proj.weight", "2-D", &found],
        );
    }
}

#[test]
fn a_scale_beside_a_tensor_that_is_not_fp8_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let norm = "model.layers.0.input_layernorm.weight";
    let model = hostile(tmp.path(), SHARD1, |t| {
        t.push(f32s(&scale(norm), &[1], &[1.0]));
    });
    let index = model.join("model.safetensors.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    v["weight_map"][scale(norm)] = json!(SHARD1);
    std::fs::write(&index, v.to_string()).unwrap();
    let s = scale(norm);
    assert_clean_error(
        &tquant(&["inspect", p(&model)]),
        &[SHARD1, &s, "BF16 rather than FP8"],
    );
}

#[test]
fn a_bad_weight_block_size_is_refused_naming_config_json() {
    for bad in [json!([128]), json!([0, 128]), json!("128x128")] {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        copy_dir(&fixture(), &model);
        let config = model.join("config.json");
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        v["quantization_config"]["weight_block_size"] = bad;
        std::fs::write(&config, v.to_string()).unwrap();
        assert_clean_error(
            &tquant(&["inspect", p(&model)]),
            &["config.json", "weight_block_size"],
        );
    }
}

#[test]
fn e5m2_weights_read_and_their_infinities_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // 1.0 (0x3C), -2.0 (0xC0), 0.5 (0x38), 0 / in two 1x2 blocks scaled by 0.5 and 4.
    let scales: Vec<u8> = [0.5f32, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = tmp.path().join("e5m2.safetensors");
    let write = |codes: Vec<u8>| {
        std::fs::write(
            &file,
            st_bytes(
                &[
                    t("w", "F8_E5M2", &[1, 4], codes),
                    t("w_scale_inv", "F32", &[1, 2], scales.clone()),
                ],
                &[],
            ),
        )
        .unwrap();
    };
    // Blocks of 1x2 through a config beside the file.
    std::fs::write(
        tmp.path().join("config.json"),
        json!({"quantization_config": {"quant_method": "fp8", "weight_block_size": [1, 2]}})
            .to_string(),
    )
    .unwrap();
    write(vec![0x3C, 0xC0, 0x38, 0x00]);
    let ckpt = Checkpoint::open(&file).unwrap();
    assert_eq!(ckpt.raw("w").unwrap().dtype, Dtype::F8_E5M2);
    assert_eq!(
        ckpt.get("w").unwrap().to_f32().unwrap(),
        [0.5, -1.0, 2.0, 0.0]
    );
    write(vec![0x3C, 0x7C, 0x38, 0x00]);
    let ckpt = Checkpoint::open(&file).unwrap();
    let err = ckpt.get("w").unwrap().to_f32().unwrap_err().to_string();
    assert!(
        err.contains("e5m2.safetensors") && err.contains("'w'") && err.contains("0x7C"),
        "{err}"
    );
}
