//! `--calibrate-self N`: calibration without calibration data, on text the float model writes
//! itself (tquant_model::generate::self_calibration_tokens), on the bundled tiny-lite model.

use crate::support;

use support::{available_memory_kb, path, stderr_of_failure, stdout_ok, tiny_lite};
use tquant::convert::Checkpoint;
use tquant::model::eval::bits_per_byte;
use tquant::model::generate::self_calibration_tokens;
use tquant::model::{Model, Options};

fn model(threads: usize) -> Model {
    let opts = Options {
        threads,
        ..Options::default()
    };
    Model::open(&tiny_lite(), opts).unwrap()
}

#[test]
fn generated_text_is_seeded_sized_and_follows_the_model() {
    let (one, two) = (model(1), model(2));
    // 1000 tokens in sequences of 256: three whole ones and a ragged one of 232.
    let a = self_calibration_tokens(&one, 1000, 256, 7).unwrap();
    let b = self_calibration_tokens(&two, 1000, 256, 7).unwrap();
    assert_eq!(a.len(), 1000);
    assert_eq!(a, b, "the thread count changed the text");
    assert_ne!(a, self_calibration_tokens(&one, 1000, 256, 8).unwrap());
    assert!(a.iter().all(|&t| t < 256));

    // Text the model samples from its own distribution costs it far fewer bits than random
    // bytes (8 bits a byte at best for a model that knows nothing of them) and about what its
    // own held-out text costs; a sampler that ignored the logits would give random bytes.
    let own: Vec<u8> = a.iter().map(|&t| t as u8).collect();
    let own_bits = bits_per_byte(&one, &own, 255, own.len())
        .unwrap()
        .bits_per_token();
    let mut rng = tquant::formats::sample::Rng::new(1);
    let noise: Vec<u8> = (0..1000).map(|_| rng.below(256) as u8).collect();
    let noise_bits = bits_per_byte(&one, &noise, 255, noise.len())
        .unwrap()
        .bits_per_token();
    assert!(
        own_bits < 3.0 && noise_bits > 6.0,
        "{own_bits} {noise_bits}"
    );
}

#[test]
fn convert_calibrates_on_its_own_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("self");
    let model = tiny_lite();
    let printed = stdout_ok(&[
        "convert",
        path(&model),
        "-o",
        path(&out),
        "--format",
        "nf4",
        "--calibrate-self",
        "3000",
        "--calibrate-seed",
        "3",
    ]);
    assert!(
        printed.contains("calibration: 3000 tokens (self-generated"),
        "{printed}"
    );
    let q = Checkpoint::open(&out).unwrap();
    let cfg = &q.config().unwrap()["quantization_config"]["calibration"];
    assert_eq!(cfg["tokens"], 3000);
    assert!(cfg["source"].as_str().unwrap().contains("seed 3"), "{cfg}");
    let kv_b = q
        .quant_info("model.layers.0.self_attn.kv_b_proj.weight")
        .unwrap();
    assert_eq!(kv_b.calibration.as_ref().unwrap().calibrated, [true]);

    let base = ["convert", path(&model), "-o", path(&out), "--force"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        stderr_of_failure(&a)
    };
    let t = model.join("config.json");
    let e = with(&["--calibrate-self", "100", "--calibrate", path(&t)]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = with(&["--calibrate-seed", "1"]);
    assert!(e.contains("--calibrate-self"), "{e}");
    let e = with(&["--calibrate-self", "100", "--calibrate-offset", "5"]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = with(&["--calibrate-self", "0"]);
    assert!(e.contains("at least one token"), "{e}");
    let e = with(&["--calibrate-self", "100", "--layout", "mxfp4"]);
    assert!(e.contains("--calibrate needs --layout tquant"), "{e}");
}

/// Generation runs the whole float model: a checkpoint whose f32 weights would not fit in the
/// available memory is refused up front, with the way around it, not run into the
/// out-of-memory killer. (A sparse file: its bytes take no disk.)
#[test]
fn a_float_model_too_large_for_memory_is_refused_before_generating() {
    let Some(available) = available_memory_kb() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(tiny_lite().join("config.json"), model.join("config.json")).unwrap();
    // One bf16 matrix whose f32 copy is twice the available memory.
    let rows = available * 1024 * 2 / (4 * 1024) + 1;
    let data = rows * 1024 * 2;
    let header = format!(
        r#"{{"lm_head.weight":{{"dtype":"BF16","shape":[{rows},1024],"data_offsets":[0,{data}]}}}}"#
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let file = model.join("model.safetensors");
    std::fs::write(&file, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    if f.set_len(bytes.len() as u64 + data).is_err() {
        return;
    }
    let out = dir.path().join("out");
    let e = stderr_of_failure(&[
        "convert",
        path(&model),
        "-o",
        path(&out),
        "--calibrate-self",
        "100",
    ]);
    assert!(e.contains("runs the whole float model"), "{e}");
    assert!(e.contains("--calibrate"), "{e}");
    assert!(!out.exists());
}
