//! `--layout compressed-tensors` against compressed-tensors 0.20 itself
//! (tests/data/convert/ct, made by scripts/fixtures/ct_layouts.py): tquant writes the same bytes
//! for every quantized tensor and the same `quantization_config`, and reads compressed-tensors'
//! files back to exactly what compressed-tensors decompresses them to. Bad files are refused
//! with the file and tensor named.

use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{Checkpoint, ConvertError, ConvertOptions, Layout, Policy, Weight};
use tquant::kernels::{matmul, Mode};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/convert/ct")
}

fn options(block: Option<&str>, scale_dtype: Option<&str>) -> ConvertOptions {
    ConvertOptions::from_args(
        None,
        None,
        block,
        scale_dtype,
        Layout::CompressedTensors,
        Policy::default(),
    )
    .unwrap()
}

fn convert(opts: &ConvertOptions, out: &Path) -> Result<(), ConvertError> {
    tquant::convert::convert(
        &data().join("input"),
        out,
        opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .map(|_| ())
}

/// `x` rounded to bf16 (nearest, ties to even), as torch's `.to(bfloat16)`; exact f32 inputs.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// tquant's output equals compressed-tensors' tensor for tensor, byte for byte.
fn assert_same_as_reference(format: &str, opts: &ConvertOptions) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    convert(opts, &out).unwrap();
    let ours = Checkpoint::open(&out).unwrap();
    let theirs = Checkpoint::open(data().join(format).join("model.safetensors")).unwrap();
    let mut compared = 0;
    for name in theirs.raw_names() {
        let (a, b) = (theirs.raw(name).unwrap(), ours.raw(name).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{format} {name}");
        assert!(a.bytes == b.bytes, "{format} {name}: bytes differ");
        compared += 1;
    }
    assert_eq!(compared, if format == "nvfp4" { 12 } else { 8 });
    assert_eq!(
        ours.shards()[0]
            .header
            .metadata
            .get("quantization_rounding")
            .map(String::as_str),
        Some("rtn")
    );
    let config = |c: &Checkpoint| c.config().unwrap()["quantization_config"].clone();
    assert_eq!(
        config(&ours),
        config(&theirs),
        "{format} quantization_config"
    );
}

#[test]
fn nvfp4_is_byte_identical_to_compressed_tensors() {
    assert_same_as_reference("nvfp4", &options(None, None));
}

#[test]
fn mxfp4_is_byte_identical_to_compressed_tensors() {
    assert_same_as_reference("mxfp4", &options(Some("32"), Some("e8m0")));
}

/// compressed-tensors' files read through tquant dequantize to its own decompression (bf16),
/// and the kernels multiply the same values.
fn assert_reads_like_reference(format: &str) {
    let dir = data().join(format);
    let ckpt = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let reference = Checkpoint::open(dir.join("reference.safetensors")).unwrap();
    let mut checked = 0;
    for name in reference.names() {
        let Weight::Quantized(q) = ckpt.get(name).unwrap() else {
            panic!("{name} is read as {format}")
        };
        assert_eq!(q.info.layout, Layout::CompressedTensors);
        assert_eq!(q.shape(), reference.raw(name).unwrap().shape);
        let want = reference.get(name).unwrap().to_f32().unwrap();
        let got = q.dequantize().unwrap();
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| bf16_bits(**a) != bf16_bits(**b))
            .count();
        assert_eq!(differ, 0, "{format} {name}: {differ} values differ");
        // The kernels' product equals the product with the dequantized matrix.
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
}

#[test]
fn nvfp4_files_of_compressed_tensors_read_back_exactly() {
    assert_reads_like_reference("nvfp4");
}

#[test]
fn mxfp4_files_of_compressed_tensors_read_back_exactly() {
    assert_reads_like_reference("mxfp4");
}

#[test]
fn tquants_own_output_reads_back_like_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    convert(&options(None, None), &out).unwrap();
    let ours = Checkpoint::open(&out).unwrap();
    let reference = Checkpoint::open(data().join("nvfp4/reference.safetensors")).unwrap();
    for name in reference.names() {
        let Weight::Quantized(q) = ours.get(name).unwrap() else {
            panic!("{name}")
        };
        let want = reference.get(name).unwrap().to_f32().unwrap();
        let got = q.dequantize().unwrap();
        assert!(got
            .iter()
            .zip(&want)
            .all(|(a, b)| bf16_bits(*a) == bf16_bits(*b)));
    }
    // In memory (no files), the same values.
    let input = Checkpoint::open(data().join("input")).unwrap();
    let name = "model.layers.1.mlp.down_proj.weight";
    let w = input.get(name).unwrap().to_f32().unwrap();
    let t = tquant::convert::quantize_tensor(
        name,
        &w,
        &[4, 64],
        tquant::convert::Dtype::BF16,
        &options(None, None),
    )
    .unwrap();
    let want = reference.get(name).unwrap().to_f32().unwrap();
    assert!(t
        .dequantize()
        .iter()
        .zip(&want)
        .all(|(a, b)| bf16_bits(*a) == bf16_bits(*b)));
}

/// A copy of the NVFP4 fixture with one tensor changed by `edit` (name -> new tensor, or
/// removed when `None`).
fn edited(
    dir: &Path,
    edit: impl Fn(&str) -> Option<Option<(safetensors::Dtype, Vec<usize>, Vec<u8>)>>,
) -> PathBuf {
    let src = data().join("nvfp4");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, view) in st.tensors() {
        match edit(&name) {
            Some(None) => continue,
            Some(Some((dtype, shape, data))) => owned.push((name, dtype, shape, data)),
            None => owned.push((
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )),
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
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

fn open_err(dir: &Path) -> String {
    Checkpoint::open(dir).unwrap_err().to_string()
}

#[test]
fn bad_scale_tensors_are_refused_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let q = "model.layers.0.self_attn.q_proj.weight";
    let file = "model.safetensors";

    let missing = edited(tmp.path(), |n| {
        (n == format!("{q}_global_scale")).then_some(None)
    });
    let e = open_err(&missing);
    assert!(
        e.contains(file) && e.contains(&format!("{q}_global_scale")),
        "{e}"
    );

    let tmp2 = tempfile::tempdir().unwrap();
    let wrong_dtype = edited(tmp2.path(), |n| {
        (n == format!("{q}_scale"))
            .then(|| Some((safetensors::Dtype::U8, vec![64, 12], vec![0x38; 64 * 12])))
    });
    let e = open_err(&wrong_dtype);
    assert!(e.contains(file) && e.contains(&format!("{q}_scale")), "{e}");

    let tmp3 = tempfile::tempdir().unwrap();
    let wrong_shape = edited(tmp3.path(), |n| {
        (n == format!("{q}_scale"))
            .then(|| Some((safetensors::Dtype::F8_E4M3, vec![64, 6], vec![0x38; 64 * 6])))
    });
    let e = open_err(&wrong_shape);
    assert!(
        e.contains(file) && e.contains(&format!("{q}_scale")) && e.contains("[64, 12]"),
        "{e}"
    );

    let tmp4 = tempfile::tempdir().unwrap();
    let zero_global = edited(tmp4.path(), |n| {
        (n == format!("{q}_global_scale")).then(|| {
            Some((
                safetensors::Dtype::F32,
                vec![1],
                0f32.to_le_bytes().to_vec(),
            ))
        })
    });
    let e = open_err(&zero_global);
    assert!(
        e.contains(file) && e.contains(&format!("{q}_global_scale")) && e.contains("positive"),
        "{e}"
    );

    let tmp5 = tempfile::tempdir().unwrap();
    let global_shape = edited(tmp5.path(), |n| {
        (n == format!("{q}_global_scale"))
            .then(|| Some((safetensors::Dtype::F32, vec![2], vec![0; 8])))
    });
    let e = open_err(&global_shape);
    assert!(
        e.contains(file) && e.contains(&format!("{q}_global_scale")),
        "{e}"
    );

    // A 0-dim global scale (as some exporters write it) is accepted.
    let tmp6 = tempfile::tempdir().unwrap();
    let scalar = edited(tmp6.path(), |n| {
        (n == format!("{q}_global_scale")).then(|| {
            Some((
                safetensors::Dtype::F32,
                vec![],
                448f32.to_le_bytes().to_vec(),
            ))
        })
    });
    let c = Checkpoint::open(&scalar).unwrap();
    assert!(matches!(c.get(q).unwrap(), Weight::Quantized(_)));
}

#[test]
fn settings_and_tensors_the_layout_cannot_store_are_refused() {
    let err = ConvertOptions::from_args(
        Some("nf4"),
        None,
        None,
        None,
        Layout::CompressedTensors,
        Policy::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("compressed-tensors stores e2m1"), "{err}");
    // A fused 3-D expert tensor has no Linear module to hold it; rows must be whole blocks.
    let opts = options(None, None);
    let q = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        tquant::convert::quantize_tensor(
            "m.w",
            &vec![0.5; n],
            shape,
            tquant::convert::Dtype::BF16,
            &opts,
        )
        .unwrap_err()
        .to_string()
    };
    let e = q(&[2, 16, 32]);
    assert!(e.contains("'m.w'") && e.contains("fused 3-D"), "{e}");
    let e = q(&[4, 24]);
    assert!(e.contains("'m.w'") && e.contains("multiple of 16"), "{e}");
    let mx = options(Some("32"), Some("e8m0"));
    let e = tquant::convert::quantize_tensor(
        "m.w",
        &[0.5; 64],
        &[4, 16],
        tquant::convert::Dtype::BF16,
        &mx,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("multiple of 32"), "{e}");
}

#[test]
fn fused_layers_are_written_with_one_tensor_scale() {
    // q/k/v of one layer with different largest magnitudes: vLLM multiplies them as one layer
    // with one tensor scale, so all three get the smallest (from the largest amax, v's).
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let names = ["q_proj", "k_proj", "v_proj", "o_proj"];
    let tensors: Vec<(String, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let amax = [0.5f32, 0.25, 2.0, 1.0][i];
            let bytes = (0..16 * 32)
                .map(|j| amax * (((j * 37 + i * 11) % 64) as f32 - 32.0) / 32.0)
                .flat_map(f32::to_le_bytes)
                .collect();
            (format!("model.layers.0.self_attn.{n}.weight"), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![16, 32], b);
            (n.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &input.join("model.safetensors")).unwrap();
    let out = tmp.path().join("q");
    tquant::convert::convert(
        &input,
        &out,
        &options(None, None),
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let ckpt = Checkpoint::open(&out).unwrap();
    let global = |n: &str| {
        let t = ckpt
            .raw(&format!("model.layers.0.self_attn.{n}.weight_global_scale"))
            .unwrap();
        f32::from_le_bytes(t.bytes.try_into().unwrap())
    };
    let v_amax = 2.0f32; // the largest magnitude of v (its value -32/32 · 2)
    let shared = (1.0 / v_amax) * 2688.0f32;
    for n in ["q_proj", "k_proj", "v_proj"] {
        assert_eq!(global(n), shared, "{n}");
    }
    assert_ne!(global("o_proj"), shared);
    // Each still reads back to its own values within NVFP4's rounding.
    let input = Checkpoint::open(&input).unwrap();
    for n in names {
        let name = format!("model.layers.0.self_attn.{n}.weight");
        let want = input.get(&name).unwrap().to_f32().unwrap();
        let Weight::Quantized(q) = ckpt.get(&name).unwrap() else {
            panic!("{name}")
        };
        let got = q.dequantize().unwrap();
        let amax = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= amax / 6.0, "{name}: {a} vs {b}");
        }
    }
}

#[test]
fn modelopt_is_byte_identical_to_modelopt_and_reads_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q");
    let opts =
        ConvertOptions::from_args(None, None, None, None, Layout::ModelOpt, Policy::default())
            .unwrap();
    convert(&opts, &out).unwrap();
    let ours = Checkpoint::open(&out).unwrap();
    let dir = data().join("modelopt");
    let theirs = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let mut compared = 0;
    for name in theirs.raw_names() {
        let (a, b) = (theirs.raw(name).unwrap(), ours.raw(name).unwrap());
        assert_eq!((a.dtype, a.shape), (b.dtype, b.shape), "{name}");
        assert!(a.bytes == b.bytes, "{name}: bytes differ");
        compared += 1;
    }
    assert_eq!(compared, 12);
    // ModelOpt's config, but tquant names itself as the producer.
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let mut want = theirs.config().unwrap()["quantization_config"].clone();
    let mut got = ours.config().unwrap()["quantization_config"].clone();
    assert_eq!(got["producer"]["name"], "tquant");
    want.as_object_mut().unwrap().remove("producer");
    got.as_object_mut().unwrap().remove("producer");
    assert_eq!(got, want);
    let (hf_want, hf_got) = (
        read(dir.join("hf_quant_config.json")),
        read(out.join("hf_quant_config.json")),
    );
    assert_eq!(hf_got["quantization"], hf_want["quantization"]);
    // ModelOpt's files dequantize through tquant to ModelOpt's own f32 values, bit for bit.
    let reference = Checkpoint::open(dir.join("reference.safetensors")).unwrap();
    for ckpt in [&theirs, &ours] {
        for name in reference.names() {
            let Weight::Quantized(q) = ckpt.get(name).unwrap() else {
                panic!("{name} is read as ModelOpt NVFP4")
            };
            assert_eq!(q.info.layout, Layout::ModelOpt);
            let want = reference.get(name).unwrap().to_f32().unwrap();
            let got = q.dequantize().unwrap();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}"
            );
        }
    }
}

#[test]
fn modelopt_without_its_tensor_scale_or_with_a_bad_one_is_refused() {
    // Drop weight_scale_2: the U8 weight is then not read as NVFP4; with a wrong one, an error
    // names the file and the tensor.
    let dir = data().join("modelopt");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let q = "model.layers.0.self_attn.q_proj.weight";
    let write = |tmp: &Path, scale_2: Option<(Vec<usize>, Vec<u8>)>| -> PathBuf {
        let mut owned = Vec::new();
        for (name, view) in st.tensors() {
            if name == format!("{q}_scale_2") {
                if let Some((shape, data)) = &scale_2 {
                    owned.push((name, safetensors::Dtype::F32, shape.clone(), data.clone()));
                }
                continue;
            }
            owned.push((
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            ));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let path = tmp.join("model.safetensors");
        safetensors::serialize_to_file(views, None, &path).unwrap();
        path
    };
    let tmp = tempfile::tempdir().unwrap();
    let negative = write(tmp.path(), Some((vec![], (-1f32).to_le_bytes().to_vec())));
    let e = open_err(&negative);
    assert!(
        e.contains("model.safetensors") && e.contains(&format!("{q}_scale_2")),
        "{e}"
    );
    let tmp2 = tempfile::tempdir().unwrap();
    let wide = write(tmp2.path(), Some((vec![3], vec![0; 12])));
    let e = open_err(&wide);
    assert!(
        e.contains(&format!("{q}_scale_2")) && e.contains("[3]"),
        "{e}"
    );
    let tmp3 = tempfile::tempdir().unwrap();
    let missing = write(tmp3.path(), None);
    // Without its multiplier the weight is a plain U8 tensor and its E4M3 scale an FP8 weight
    // without block scales: refused, naming that tensor.
    let e = open_err(&missing);
    assert!(e.contains(&format!("{q}_scale")), "{e}");
}
