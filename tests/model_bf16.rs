//! bf16 checkpoints run at their stored width: matrices stay bf16 (borrowed from the file's
//! map, or copied once when the file places them at an odd offset) and multiply through the
//! bf16 kernels; exact mode gives the logits of the same weights widened to f32.

use crate::support;

use std::collections::BTreeMap;
use std::io::Write;
use support::{max_diff, tiny_lite};
use tquant::convert::header::{serialize_header, OutEntry};
use tquant::convert::Dtype;
use tquant::model::{
    checkpoint_source, Bf16Data, Config, Logits, Mode, Model, ModelError, Options, TensorData,
    TensorSource,
};

/// Every tensor widened to f32, as models held them before bf16 kernels.
struct Widened<S>(S);

impl<S: TensorSource> TensorSource for Widened<S> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.0.tensor(name)
    }
}

fn tokens() -> Vec<u32> {
    (0..48).map(|i| (i * 37 + 5) % 256).collect()
}

fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache();
    model.forward(&tokens(), &mut cache, Logits::All).unwrap()
}

#[test]
fn tiny_lite_stays_bf16_and_matches_the_widened_model() {
    let dir = tiny_lite();
    let config = Config::from_path(&dir).unwrap();
    let bf16 = Model::open(&dir, Options::default()).unwrap();
    let wide = Model::from_source(
        config,
        &Widened(checkpoint_source(&dir).unwrap()),
        Options::default(),
    )
    .unwrap();
    // Every matrix of tiny-lite is bf16: half the bytes per decoded token.
    assert_eq!(2 * bf16.active_weight_bytes(), wide.active_weight_bytes());
    let (a, b) = (logits(&bf16), logits(&wide));
    let d = max_diff(&a, &b);
    // Same products, same f32 arithmetic; only the summation order may differ.
    assert!(d < 1e-4, "bf16 vs widened logits: {d}");

    // Fast mode rounds activations to bf16: close, not equal.
    let fast = Model::open(
        &dir,
        Options {
            mode: Mode::Fast,
            ..Options::default()
        },
    )
    .unwrap();
    let f = logits(&fast);
    let d = max_diff(&f, &b);
    eprintln!("fast vs widened logits: max difference {d}");
    assert!(d > 0.0 && d < 0.1, "fast vs widened logits: {d}");
}

/// A file with a 1-byte u8 tensor first, so the bf16 tensor after it starts at an odd offset
/// (when `odd`), then the bf16 tensor `w` [2, 3].
fn write_file(path: &std::path::Path, odd: bool, values: &[f32]) {
    let lead = if odd { 1 } else { 2 };
    let entries = vec![
        OutEntry {
            name: "lead".into(),
            dtype: Dtype::U8,
            shape: vec![lead],
            begin: 0,
            end: lead as u64,
        },
        OutEntry {
            name: "w".into(),
            dtype: Dtype::BF16,
            shape: vec![2, 3],
            begin: lead as u64,
            end: lead as u64 + 12,
        },
    ];
    let header = serialize_header(&entries, &BTreeMap::new(), 0);
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    f.write_all(&vec![0u8; lead]).unwrap();
    for v in values {
        f.write_all(&support::bf16_bytes(*v)).unwrap();
    }
}

#[test]
fn bf16_tensors_are_borrowed_when_aligned_and_copied_once_when_not() {
    let tmp = tempfile::tempdir().unwrap();
    let values = [1.0f32, -2.0, 0.5, 3.0, -0.25, 8.0];
    for odd in [false, true] {
        let path = tmp.path().join(format!("odd_{odd}.safetensors"));
        write_file(&path, odd, &values);
        let src = checkpoint_source(&path).unwrap();
        let TensorData::Bf16 { shape, data } = src.stored("w").unwrap() else {
            panic!("a bf16 matrix is handed out as bf16");
        };
        assert_eq!(shape, [2, 3]);
        assert_eq!(data.to_f32(), values);
        match (odd, &data) {
            (false, Bf16Data::Mapped { .. }) | (true, Bf16Data::Owned(_)) => {}
            _ => panic!("odd offset {odd}: held as {data:?}"),
        }
        // `tensor` still hands out f32 values for code that reads them.
        let TensorData::Dense { values: v, .. } = src.tensor("w").unwrap() else {
            panic!("tensor() widens");
        };
        assert_eq!(v, values);
    }
}
