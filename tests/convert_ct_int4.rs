//! compressed-tensors `pack-quantized` INT4 (preset `W4A16`, group 64; tests/data/convert/ct/int4,
//! made by scripts/fixtures/ct_int4.py): `--format int4_full --block 64 --scale-dtype f32`
//! writes compressed-tensors' bytes and config; tquant reads compressed-tensors' files to exactly
//! what compressed-tensors decompresses them to, the kernels multiply the same values, and malformed
//! files are refused with the file and tensor named.

use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{Checkpoint, ConvertOptions, Layout, Policy, Weight};
use tquant::kernels::{matmul, Mode};

fn int4_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/ct/int4")
}

#[test]
fn int4_is_byte_identical_to_compressed_tensors() {
    let opts = ConvertOptions::from_args(
        Some("int4_full"),
        None,
        Some("64"),
        Some("f32"),
        Layout::CompressedTensors,
        Policy::default(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let input = int4_dir().parent().unwrap().join("input");
    tquant::convert::convert(&input, &out, &opts, &RunOptions::default(), &NoProgress).unwrap();
    let ours = Checkpoint::open(&out).unwrap();
    let theirs = Checkpoint::open(int4_dir().join("model.safetensors")).unwrap();
    let mut compared = 0;
    for name in theirs.raw_names() {
        let (a, b) = (theirs.raw(name).unwrap(), ours.raw(name).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{name}");
        assert!(a.bytes == b.bytes, "{name}: bytes differ");
        compared += 1;
    }
    assert_eq!(compared, 12);
    let config = |c: &Checkpoint| c.config().unwrap()["quantization_config"].clone();
    assert_eq!(config(&ours), config(&theirs));
    // The catalog's int4 (-7..7) is not compressed-tensors' range.
    assert!(ConvertOptions::from_args(
        Some("int4"),
        None,
        Some("64"),
        Some("f32"),
        Layout::CompressedTensors,
        Policy::default(),
    )
    .is_err());
}

#[test]
fn int4_files_of_compressed_tensors_read_back_exactly() {
    let dir = int4_dir();
    let ckpt = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let reference = Checkpoint::open(dir.join("reference.safetensors")).unwrap();
    let mut checked = 0;
    for name in reference.names() {
        let Weight::Quantized(q) = ckpt.get(name).unwrap() else {
            panic!("{name} is read as int4")
        };
        assert_eq!(q.info.layout, Layout::CompressedTensors);
        assert_eq!(q.info.block, 64);
        assert_eq!(q.shape(), reference.raw(name).unwrap().shape);
        let want = reference.get(name).unwrap().to_f32().unwrap();
        let got = q.dequantize().unwrap();
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{name}: {differ} values differ");
        let m = q.qmatrix(0).unwrap();
        let (rows, cols) = (q.info.rows(), q.info.cols());
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let mut y = vec![0.0f32; rows];
        matmul(&m, &x, 1, &mut y, Mode::Exact).unwrap();
        for (r, yr) in y.iter().enumerate() {
            let dense: f64 = (0..cols)
                .map(|c| got[r * cols + c] as f64 * x[c] as f64)
                .sum();
            let tol = 1e-4 * (1.0 + dense.abs());
            assert!(
                (*yr as f64 - dense).abs() <= tol,
                "{name} row {r}: {yr} vs {dense}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
    // weight_shape is a part of its weight, not a tensor of the model.
    assert!(ckpt.names().all(|n| !n.ends_with("_shape")));
}

type Tensor = (safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A copy of the INT4 fixture with the tensor `target` replaced by `with`.
fn edited(dir: &Path, target: &str, with: Tensor) -> PathBuf {
    let src = int4_dir();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let owned: Vec<(String, Tensor)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = if name == target {
                with.clone()
            } else {
                (view.dtype(), view.shape().to_vec(), view.data().to_vec())
            };
            (name, t)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = dir.join("bad");
    std::fs::create_dir_all(&out).unwrap();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
    out
}

#[test]
fn malformed_int4_tensors_are_refused_naming_file_and_tensor() {
    use safetensors::Dtype;
    let q = "model.layers.0.self_attn.q_proj.weight";
    let cases: [(String, Tensor, &str); 4] = [
        (
            format!("{q}_shape"),
            (
                Dtype::I64,
                vec![2],
                [64i64, 200].map(i64::to_le_bytes).concat(),
            ),
            "does not match weight_packed",
        ),
        (
            format!("{q}_shape"),
            (
                Dtype::I32,
                vec![2],
                [64i32, 192].map(i32::to_le_bytes).concat(),
            ),
            "_shape",
        ),
        (
            format!("{q}_packed"),
            (Dtype::U8, vec![64, 96], vec![0x88; 64 * 96]),
            "must be I32",
        ),
        (
            format!("{q}_scale"),
            (Dtype::U8, vec![64, 3], vec![1; 64 * 3]),
            "F32, BF16 or F16",
        ),
    ];
    for (target, with, why) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let e = Checkpoint::open(edited(tmp.path(), &target, with))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors") && e.contains(q) && e.contains(why),
            "{target}: {e}"
        );
    }
}
