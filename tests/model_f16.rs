//! f16 checkpoints run at their stored width: matrices stay f16 (borrowed from the file's map)
//! and multiply through the f16 kernels, with the logits of the same weights widened to f32 (how
//! models held f16 weights before the f16 kernels).

use crate::support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use support::{f16_bytes, max_diff, tiny_lite};
use tquant::convert::header::{serialize_header, OutEntry};
use tquant::convert::{Checkpoint, Dtype};
use tquant::model::{
    checkpoint_source, Bf16Data, Config, Logits, Mode, Model, ModelError, Options, TensorData,
    TensorSource,
};

/// Every tensor widened to f32 (`tensor`, not `stored`).
struct Widened<S>(S);

impl<S: TensorSource> TensorSource for Widened<S> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.0.tensor(name)
    }
}

/// tiny-lite with every tensor stored as f16 (its bf16 values rounded to nearest even).
fn write_f16_copy(dir: &Path) {
    let src = Checkpoint::open(tiny_lite()).unwrap();
    let mut names: Vec<String> = src.names().map(str::to_string).collect();
    names.sort();
    let (mut entries, mut data, mut pos) = (Vec::new(), Vec::new(), 0u64);
    for name in &names {
        let values = src.dense_f32(name).unwrap();
        for &v in &values {
            let b = f16_bytes(v);
            assert!(half::f16::from_le_bytes(b).is_finite(), "{name} fits f16");
            data.extend_from_slice(&b);
        }
        let len = 2 * values.len() as u64;
        entries.push(OutEntry {
            name: name.clone(),
            dtype: Dtype::F16,
            shape: src.get(name).unwrap().shape().to_vec(),
            begin: pos,
            end: pos + len,
        });
        pos += len;
    }
    std::fs::create_dir_all(dir).unwrap();
    let header = serialize_header(&entries, &BTreeMap::new(), 0);
    let mut f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    f.write_all(&data).unwrap();
    std::fs::copy(tiny_lite().join("config.json"), dir.join("config.json")).unwrap();
}

fn logits(model: &Model) -> Vec<f32> {
    let tokens: Vec<u32> = (0..48).map(|i| (i * 37 + 5) % 256).collect();
    let mut cache = model.new_cache();
    model.forward(&tokens, &mut cache, Logits::All).unwrap()
}

#[test]
fn f16_tiny_lite_stays_f16_and_matches_the_widened_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("f16");
    write_f16_copy(&dir);
    let config = Config::from_path(&dir).unwrap();

    // Matrices are handed out as f16 bits borrowed from the map; vectors widened.
    let src = checkpoint_source(&dir).unwrap();
    let name = "model.layers.0.self_attn.o_proj.weight";
    let TensorData::F16 { data, .. } = src.stored(name).unwrap() else {
        panic!("{name} is handed out as f16");
    };
    assert!(matches!(data, Bf16Data::Mapped { .. }), "{data:?}");
    let TensorData::Dense { values, .. } = src.tensor(name).unwrap() else {
        panic!("tensor() widens");
    };
    assert_eq!(data.f16_to_f32(), values);

    let f16 = Model::open(&dir, Options::default()).unwrap();
    let wide = Model::from_source(config, &Widened(src), Options::default()).unwrap();
    let bf16 = Model::open(&tiny_lite(), Options::default()).unwrap();
    // Every matrix stays 2 bytes a weight: as many bytes per token as bf16, half of f32.
    assert_eq!(f16.active_weight_bytes(), bf16.active_weight_bytes());
    assert_eq!(2 * f16.active_weight_bytes(), wide.active_weight_bytes());
    let want = logits(&wide);
    // Same products in f32 arithmetic; only the summation order may differ (the bf16 bound).
    let d = max_diff(&logits(&f16), &want);
    assert!(d < 1e-4, "f16 vs widened logits: {d}");

    // Fast mode: f16 matrices keep exact arithmetic; the rest of the model's fast paths (none
    // for a float model but the absorbed attention's copy at the stored width) stay close.
    let fast = Model::open(
        &dir,
        Options {
            mode: Mode::Fast,
            ..Options::default()
        },
    )
    .unwrap();
    let d = max_diff(&logits(&fast), &want);
    assert!(d < 1e-3, "fast f16 vs widened logits: {d}");
}
