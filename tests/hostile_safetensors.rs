//! Malformed safetensors checkpoints: every command that reads one (convert, inspect, verify,
//! eval) and the library reader must refuse it with an error naming the file (and the tensor
//! where there is one), never panic.

use crate::hostile_support;

use hostile_support::*;
use std::path::{Path, PathBuf};
use tquant::convert::header::parse_file_bytes;
use tquant::convert::{Checkpoint, Weight};

/// A malformed checkpoint directory and what its error must mention besides the file.
struct Case {
    name: &'static str,
    dir: PathBuf,
    /// File the error must name (the shard, or the index).
    file: &'static str,
    needles: Vec<&'static str>,
}

fn tiny_config() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite/config.json"),
    )
    .unwrap()
}

/// A directory with `model.safetensors` = `bytes` and a valid config (so eval reaches the
/// weights).
fn case_dir(root: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    std::fs::write(dir.join("config.json"), tiny_config()).unwrap();
    dir
}

fn valid_file() -> Vec<u8> {
    st_bytes(
        &[
            f32s("a", &[4, 4], &values(16, 1)),
            f32s(
                "model.layers.0.mlp.up_proj.weight",
                &[4, 64],
                &values(256, 2),
            ),
        ],
        &[("format", "pt")],
    )
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

fn cases(root: &Path) -> Vec<Case> {
    let valid = valid_file();
    let mut out = Vec::new();
    let mut add = |name: &'static str, bytes: Vec<u8>, needles: Vec<&'static str>| {
        out.push(Case {
            name,
            dir: case_dir(root, name, &bytes),
            file: "model.safetensors",
            needles,
        })
    };
    add(
        "truncated_data",
        valid[..valid.len() - 100].to_vec(),
        vec!["model.layers.0.mlp.up_proj.weight", "data section"],
    );
    add(
        "truncated_header",
        valid[..40].to_vec(),
        vec!["past the end", "truncated"],
    );
    add(
        "shorter_than_length",
        valid[..5].to_vec(),
        vec!["shorter than the 8-byte header length"],
    );
    add("empty", Vec::new(), vec!["0 bytes"]);
    add("random_bytes", random_bytes(4096, 7), vec!["header length"]);
    let mut long = valid.clone();
    long[..8].copy_from_slice(&(valid.len() as u64).to_le_bytes());
    add("header_longer_than_file", long, vec!["past the end"]);
    let mut huge = valid.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    add("header_length_u64_max", huge, vec!["exceeds"]);
    add(
        "header_not_json",
        raw_file("{\"a\": {\"dtype\": \"F32\", ", &[0; 8]),
        vec!["not JSON"],
    );
    let mut not_utf8 = raw_file(r#"{"x":{}}"#, &[]);
    not_utf8[10] = 0xff;
    add("header_not_utf8", not_utf8, vec!["not UTF-8"]);
    add(
        "header_json_array",
        raw_file("[1, 2]", &[]),
        vec!["not a JSON object"],
    );
    add(
        "offsets_out_of_range",
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,1000]}}"#,
            &[0; 16],
        ),
        vec!["'w'", "do not lie inside"],
    );
    add(
        "offsets_reversed",
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}}"#,
            &[0; 16],
        ),
        vec!["'w'", "do not lie inside"],
    );
    add(
        "offsets_negative",
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[-4,12]}}"#,
            &[0; 16],
        ),
        vec!["'w'", "non-negative"],
    );
    add(
        "offsets_overlap",
        raw_file(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            &[0; 24],
        ),
        vec!["'b'", "overlaps"],
    );
    add(
        "offsets_gap",
        raw_file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#,
            &[0; 20],
        ),
        vec!["'b'", "gap"],
    );
    add(
        "data_past_last_tensor",
        raw_file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 12],
        ),
        vec!["cover 8 bytes", "12 bytes"],
    );
    add(
        "shape_size_disagree",
        raw_file(
            r#"{"w":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ),
        vec!["'w'", "needs 24"],
    );
    add(
        "shape_overflows",
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ),
        vec!["'w'", "overflows"],
    );
    add(
        "shape_negative",
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ),
        vec!["'w'", "not a non-negative integer"],
    );
    add(
        "unknown_dtype",
        raw_file(
            r#"{"w":{"dtype":"Q9","shape":[4],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        vec!["'w'", "unknown dtype 'Q9'"],
    );
    add(
        "sub_byte_dtype",
        raw_file(
            r#"{"w":{"dtype":"F4","shape":[8],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        vec!["'w'", "F4 is not supported"],
    );
    add(
        "zero_dim_with_bytes",
        raw_file(
            r#"{"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[0,64],"data_offsets":[0,256]}}"#,
            &[0; 256],
        ),
        vec!["model.layers.0.mlp.up_proj.weight", "needs 0"],
    );
    add(
        "entry_unknown_field",
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#,
            &[0; 4],
        ),
        vec!["'w'", "unknown field"],
    );
    add(
        "metadata_not_strings",
        raw_file(r#"{"__metadata__":{"format":["pt"]}}"#, &[]),
        vec!["__metadata__"],
    );

    // Sharded checkpoints whose index disagrees with the shards.
    let shard = |dir: &Path, file: &str, tensors: &[T]| {
        std::fs::write(dir.join(file), st_bytes(tensors, &[("format", "pt")])).unwrap();
    };
    let index = |dir: &Path, map: serde_json::Value| {
        let v = serde_json::json!({"metadata": {}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), v.to_string()).unwrap();
        std::fs::write(dir.join("config.json"), tiny_config()).unwrap();
    };
    let dir = root.join("index_missing_shard");
    std::fs::create_dir_all(&dir).unwrap();
    shard(&dir, "model-1.safetensors", &[f32s("a", &[4], &[1.0; 4])]);
    index(
        &dir,
        serde_json::json!({"a": "model-1.safetensors", "b": "model-2.safetensors"}),
    );
    out.push(Case {
        name: "index_missing_shard",
        dir,
        file: "model-2.safetensors",
        needles: vec!["No such file"],
    });
    let dir = root.join("index_tensor_absent");
    std::fs::create_dir_all(&dir).unwrap();
    shard(&dir, "model-1.safetensors", &[f32s("a", &[4], &[1.0; 4])]);
    shard(&dir, "model-2.safetensors", &[f32s("b", &[4], &[1.0; 4])]);
    index(
        &dir,
        serde_json::json!({
            "a": "model-1.safetensors",
            "b": "model-2.safetensors",
            "c": "model-2.safetensors",
        }),
    );
    out.push(Case {
        name: "index_tensor_absent",
        dir,
        file: "model.safetensors.index.json",
        needles: vec!["'c'", "absent from model-2.safetensors"],
    });
    let dir = root.join("index_wrong_shard");
    std::fs::create_dir_all(&dir).unwrap();
    shard(&dir, "model-1.safetensors", &[f32s("a", &[4], &[1.0; 4])]);
    shard(&dir, "model-2.safetensors", &[f32s("b", &[4], &[1.0; 4])]);
    index(
        &dir,
        serde_json::json!({"a": "model-2.safetensors", "b": "model-1.safetensors"}),
    );
    out.push(Case {
        name: "index_wrong_shard",
        dir,
        file: "model.safetensors.index.json",
        needles: vec!["'a'", "index says model-2.safetensors"],
    });
    let dir = root.join("index_escapes_dir");
    std::fs::create_dir_all(&dir).unwrap();
    index(&dir, serde_json::json!({"a": "../model.safetensors"}));
    out.push(Case {
        name: "index_escapes_dir",
        dir,
        file: "model.safetensors.index.json",
        needles: vec!["'a'", "not a .safetensors file name"],
    });
    let dir = root.join("index_not_json");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        "{\"weight_map\": ",
    )
    .unwrap();
    out.push(Case {
        name: "index_not_json",
        dir,
        file: "model.safetensors.index.json",
        needles: vec!["not JSON"],
    });
    let dir = root.join("duplicate_across_shards");
    std::fs::create_dir_all(&dir).unwrap();
    shard(&dir, "model-1.safetensors", &[f32s("a", &[4], &[1.0; 4])]);
    shard(&dir, "model-2.safetensors", &[f32s("a", &[4], &[1.0; 4])]);
    index(
        &dir,
        serde_json::json!({"a": "model-1.safetensors", "b": "model-2.safetensors"}),
    );
    out.push(Case {
        name: "duplicate_across_shards",
        dir,
        file: "model-2.safetensors",
        needles: vec!["'a'", "also present in"],
    });
    let dir = root.join("config_not_json");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), &valid).unwrap();
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    out.push(Case {
        name: "config_not_json",
        dir,
        file: "config.json",
        needles: vec!["not JSON"],
    });
    out
}

#[test]
fn library_reader_rejects_every_malformed_checkpoint_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases(tmp.path()) {
        let err = Checkpoint::open(&case.dir)
            .map(|_| ())
            .expect_err(case.name)
            .to_string();
        assert!(err.contains(case.file), "{}: {err}", case.name);
        for n in &case.needles {
            assert!(err.contains(n), "{}: '{n}' not in: {err}", case.name);
        }
        // The in-memory parser agrees with the file reader on single files.
        let file = case.dir.join("model.safetensors");
        if case.file == "model.safetensors" && file.exists() {
            let bytes = std::fs::read(&file).unwrap();
            let mem = parse_file_bytes(&bytes, &file)
                .map(|_| ())
                .expect_err(case.name)
                .to_string();
            assert_eq!(mem, err, "{}", case.name);
        }
    }
}

#[test]
fn every_command_refuses_every_malformed_checkpoint_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let good = small_model(&tmp.path().join("good"));
    let text = tmp.path().join("text.txt");
    std::fs::write(&text, b"hello hostile world").unwrap();
    for case in cases(&tmp.path().join("cases")) {
        let dir = p(&case.dir);
        let out_dir = tmp.path().join(format!("out-{}", case.name));
        let mut needles = vec![case.file];
        needles.extend(&case.needles);
        let runs: [Vec<&str>; 5] = [
            vec!["convert", dir, "-o", p(&out_dir)],
            vec!["inspect", dir],
            vec!["verify", dir, p(&good)],
            vec!["verify", p(&good), dir],
            vec!["eval", dir, "--text", p(&text)],
        ];
        for args in runs {
            let out = tquant(&args);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{} {args:?}: {stderr}",
                case.name
            );
            assert!(!stderr.contains("panicked"), "{}: {stderr}", case.name);
            for n in &needles {
                assert!(
                    stderr.contains(n),
                    "{} {args:?}: '{n}' not in: {stderr}",
                    case.name
                );
            }
        }
        assert!(!out_dir.exists(), "{}: convert left an output", case.name);
    }
}

/// A shard path given directly (not its directory) is read the same way.
#[test]
fn single_file_path_errors_name_that_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("weights.safetensors");
    std::fs::write(
        &file,
        raw_file(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,1000]}}"#,
            &[0; 16],
        ),
    )
    .unwrap();
    let err = Checkpoint::open(&file).unwrap_err().to_string();
    assert!(
        err.contains("weights.safetensors") && err.contains("'w'"),
        "{err}"
    );
    assert_clean_error(
        &tquant(&["inspect", p(&file)]),
        &["weights.safetensors", "'w'"],
    );
    let missing = tmp.path().join("absent.safetensors");
    assert_clean_error(&tquant(&["inspect", p(&missing)]), &["absent.safetensors"]);
    let empty_dir = tmp.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    assert_clean_error(
        &tquant(&["inspect", p(&empty_dir)]),
        &["not a safetensors checkpoint"],
    );
}

/// Zero-size dimensions are legal safetensors: such tensors are listed, kept unquantized by
/// convert (never handed to the quantizer), and read back as empty.
#[test]
fn zero_size_tensors_are_kept_not_quantized() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("zero");
    std::fs::create_dir_all(&dir).unwrap();
    let tensors = [
        t("model.layers.0.mlp.up_proj.weight", "F32", &[0, 64], vec![]),
        t(
            "model.layers.0.mlp.down_proj.weight",
            "BF16",
            &[64, 0],
            vec![],
        ),
        t("model.layers.0.experts.gate_up", "F32", &[0, 4, 64], vec![]),
        t("scalar_like", "F32", &[], vec![0; 4]),
        f32s(
            "model.layers.0.self_attn.q_proj.weight",
            &[4, 64],
            &values(256, 9),
        ),
    ];
    std::fs::write(dir.join("model.safetensors"), st_bytes(&tensors, &[])).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    for name in [
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.experts.gate_up",
    ] {
        let Weight::Dense(w) = ckpt.get(name).unwrap() else {
            panic!("{name} is not dense")
        };
        assert!(w.bytes.is_empty() && w.to_f32().unwrap().is_empty());
    }
    assert_success(&tquant(&["inspect", p(&dir)]));
    let out = tmp.path().join("out");
    assert_success(&tquant(&["convert", p(&dir), "-o", p(&out)]));
    let q = Checkpoint::open(&out).unwrap();
    assert!(matches!(
        q.get("model.layers.0.mlp.up_proj.weight").unwrap(),
        Weight::Dense(_)
    ));
    assert!(matches!(
        q.get("model.layers.0.self_attn.q_proj.weight").unwrap(),
        Weight::Quantized(_)
    ));
    assert_success(&tquant(&["verify", p(&dir), p(&out)]));
}
