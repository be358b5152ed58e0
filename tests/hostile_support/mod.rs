//! Helpers of the hostile-input tests: raw safetensors files built byte by byte (so they can be
//! wrong in any way), header surgery on real files, and running the `tquant` binary.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A safetensors file from a header (any JSON text, valid or not) and a data section.
pub fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

/// One tensor of a hand-made file: offsets are computed by [`st_bytes`].
#[derive(Debug, Clone)]
pub struct T {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn t(name: &str, dtype: &'static str, shape: &[usize], bytes: Vec<u8>) -> T {
    T {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

/// An f32 tensor.
pub fn f32s(name: &str, shape: &[usize], values: &[f32]) -> T {
    assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
    t(
        name,
        "F32",
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// A well-formed safetensors file holding `tensors` in order, with `metadata`.
pub fn st_bytes(tensors: &[T], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut data = Vec::new();
    for t in tensors {
        let begin = data.len();
        data.extend_from_slice(&t.bytes);
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [begin, data.len()]}),
        );
    }
    raw_file(&Value::Object(header).to_string(), &data)
}

/// Deterministic pseudo-random values in about [-1, 1] (a small LCG; no statistics needed).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A checkpoint directory whose default policy quantizes two matrices and keeps the rest.
pub fn small_model(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let tensors = [
        f32s("model.embed_tokens.weight", &[8, 64], &values(512, 1)),
        f32s(
            "model.layers.0.mlp.up_proj.weight",
            &[32, 64],
            &values(2048, 2),
        ),
        f32s(
            "model.layers.0.self_attn.q_proj.weight",
            &[16, 128],
            &values(2048, 3),
        ),
        f32s("model.norm.weight", &[64], &values(64, 4)),
    ];
    std::fs::write(
        dir.join("model.safetensors"),
        st_bytes(&tensors, &[("format", "pt")]),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Splits a safetensors file into its parsed header and its data section.
pub fn split(bytes: &[u8]) -> (Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let Value::Object(map) = header else {
        panic!("header is not an object")
    };
    (map, bytes[8 + n..].to_vec())
}

/// Rewrites the header of the safetensors file at `path` in place, keeping its data section.
pub fn edit_header(path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let (mut header, data) = split(&std::fs::read(path).unwrap());
    edit(&mut header);
    let text = Value::Object(header).to_string();
    std::fs::write(path, raw_file(&text, &data)).unwrap();
}

/// Rewrites one string of the `__metadata__` of a header.
pub fn edit_metadata(header: &mut Map<String, Value>, key: &str, edit: impl FnOnce(&mut Value)) {
    let meta = header
        .get_mut("__metadata__")
        .and_then(Value::as_object_mut)
        .expect("has metadata");
    let text = meta[key].as_str().expect("string metadata").to_string();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    meta.insert(key.into(), json!(v.to_string()));
}

/// Copies a directory's files (not recursive).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn tquant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tquant"))
        .args(args)
        .output()
        .expect("runs tquant")
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A command that failed the way a user should see it: exit code 1 (not a panic's 101 or a
/// signal), `error:` on stderr naming every `needle`, and no panic message.
pub fn assert_clean_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean failure, got {:?}\nstderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(stderr.contains("error:"), "no error message: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks '{n}': {stderr}");
    }
    stderr
}

pub fn assert_success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed ({:?}): {stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the entries of a directory, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A safetensors file taken apart: its tensors in file order and its `__metadata__`.
pub fn tensors_of(bytes: &[u8]) -> (Vec<T>, Vec<(String, String)>) {
    let (header, data) = split(bytes);
    let mut meta = Vec::new();
    let mut tensors = Vec::new();
    for (name, v) in header {
        if name == "__metadata__" {
            for (k, v) in v.as_object().unwrap() {
                meta.push((k.clone(), v.as_str().unwrap().to_string()));
            }
            continue;
        }
        let o = &v["data_offsets"];
        let (b, e) = (
            o[0].as_u64().unwrap() as usize,
            o[1].as_u64().unwrap() as usize,
        );
        let dtype: &'static str =
            Box::leak(v["dtype"].as_str().unwrap().to_string().into_boxed_str());
        let shape = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect::<Vec<_>>();
        tensors.push((b, t(&name, dtype, &shape, data[b..e].to_vec())));
    }
    tensors.sort_by_key(|(b, _)| *b);
    (tensors.into_iter().map(|(_, t)| t).collect(), meta)
}

/// Rebuilds the safetensors file at `path` after `edit` changed its tensors or metadata.
pub fn rebuild(path: &Path, edit: impl FnOnce(&mut Vec<T>, &mut Vec<(String, String)>)) {
    let (mut tensors, mut meta) = tensors_of(&std::fs::read(path).unwrap());
    edit(&mut tensors, &mut meta);
    let meta_refs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    std::fs::write(path, st_bytes(&tensors, &meta_refs)).unwrap();
}

/// The tensor named `name` of a list being edited.
pub fn find<'a>(tensors: &'a mut [T], name: &str) -> &'a mut T {
    tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}
