//! Quantized checkpoints written by tquant-convert run from the memory map through the kernels:
//! the result equals the same model with the weights dequantized to f32 (the kernels' exact mode
//! against plain float products), matches quantizing in memory, and costs a plausible few
//! hundredths of a bit per byte on the trained model.

use crate::support;

use std::path::{Path, PathBuf};
use support::{max_diff, Dequantized};
use tempfile::TempDir;
use tquant::convert::{
    convert, Checkpoint, ConvertOptions, KeepAs, Layout, NoProgress, Policy, RunOptions,
};
use tquant::formats::{BlockQuantizer, BlockSize, ScaleDtype};
use tquant::model::eval::bits_per_byte;
use tquant::model::weights::rtn_decoder_matrices;
use tquant::model::{Config, Logits, Model, Options, TensorData, TensorSource};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/data/model").join(name)
}

const TOKENS: [u32; 12] = [3, 17, 92, 5, 64, 64, 1, 120, 33, 7, 88, 41];

fn quantize(input: &Path, format: &str, block: &str, scale: &str) -> TempDir {
    quantize_as(
        input,
        format,
        block,
        scale,
        Layout::Tquant,
        Policy::default(),
    )
}

fn quantize_as(
    input: &Path,
    format: &str,
    block: &str,
    scale: &str,
    layout: Layout,
    policy: Policy,
) -> TempDir {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("q");
    let opts =
        ConvertOptions::from_args(Some(format), None, Some(block), Some(scale), layout, policy)
            .unwrap();
    convert(input, &out, &opts, &RunOptions::default(), &NoProgress).unwrap();
    dir
}

fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache();
    model.forward(&TOKENS, &mut cache, Logits::All).unwrap()
}

fn check_equals_dequantized(fixture_name: &str, format: &str, block: &str, scale: &str) {
    check_dir_equals_dequantized(
        fixture_name,
        format,
        quantize(&fixture(fixture_name), format, block, scale),
    );
}

fn check_dir_equals_dequantized(fixture_name: &str, format: &str, dir: TempDir) {
    let q = dir.path().join("q");
    let model = Model::open(&q, Options::default()).unwrap();
    assert!(model.is_quantized());
    let config = Config::from_path(&q).unwrap();
    let deq = Model::from_source(
        config,
        &Dequantized(Checkpoint::open(&q).unwrap()),
        Options::default(),
    )
    .unwrap();
    assert!(!deq.is_quantized());
    let (a, b) = (logits(&model), logits(&deq));
    let d = max_diff(&a, &b);
    assert!(
        d < 1e-3,
        "{fixture_name} {format}: quantized vs dequantized {d}"
    );
    // And quantization did change the model.
    let float = logits(&Model::open(&fixture(fixture_name), Options::default()).unwrap());
    assert!(max_diff(&a, &float) > 1e-2);
}

#[test]
fn fused_expert_checkpoint_runs_quantized_as_dequantized() {
    // lite: routed experts fused 3-D, f16; one codebook per expert (sf4 with fitted nu).
    check_equals_dequantized("lite", "sf4", "32", "f16");
}

#[test]
fn sharded_bf16_checkpoint_runs_quantized_as_dequantized() {
    // v2: per-expert tensors, bf16, three shards; whole-row blocks, e8m0-free int4 with bf16.
    check_equals_dequantized("v2", "int4", "16", "bf16");
    check_equals_dequantized("v2", "e2m1", "row", "f32");
}

#[test]
fn mxfp4_checkpoint_runs_quantized_as_dequantized() {
    // Hugging Face's MXFP4 layout (E2M1, blocks of 32, E8M0 scales); rows of 24 and 48 values
    // cannot be MXFP4 and stay float.
    let policy = Policy {
        include: Vec::new(),
        exclude: vec![
            "*experts.down_proj".into(),
            "*shared_experts.down_proj*".into(),
        ],
        ..Policy::default()
    };
    let dir = quantize_as(
        &fixture("lite"),
        "e2m1",
        "32",
        "e8m0",
        Layout::Mxfp4,
        policy,
    );
    check_dir_equals_dequantized("lite", "mxfp4", dir);
}

#[test]
fn quantized_file_matches_quantizing_in_memory() {
    // Embeddings and lm_head at source precision, as the in-memory rule keeps them.
    let dir = TempDir::new().unwrap();
    let opts = ConvertOptions {
        keep_as: KeepAs::Source,
        ..ConvertOptions::from_args(
            Some("nf4"),
            None,
            Some("32"),
            Some("f32"),
            Layout::Tquant,
            Policy::default(),
        )
        .unwrap()
    };
    let out = dir.path().join("q");
    convert(
        &fixture("lite"),
        &out,
        &opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    let from_file = logits(&Model::open(&dir.path().join("q"), Options::default()).unwrap());
    let rule = rtn_decoder_matrices(
        "nf4".parse().unwrap(),
        BlockQuantizer {
            block: BlockSize::Elements(32),
            scale_dtype: ScaleDtype::F32,
        },
    );
    let in_memory =
        logits(&Model::open_quantized(&fixture("lite"), Options::default(), rule).unwrap());
    let d = max_diff(&from_file, &in_memory);
    assert!(d < 1e-5, "file vs memory: {d}");
}

#[test]
fn quantized_tiny_lite_costs_a_few_hundredths_of_a_bit() {
    let text = std::fs::read(fixture("heldout_head.txt")).unwrap();
    let bytes = 64 * 257;
    let float = Model::open(&root().join("examples/tiny-lite"), Options::default()).unwrap();
    let f = bits_per_byte(&float, &text, 256, bytes)
        .unwrap()
        .bits_per_token();
    let dir = quantize(&root().join("examples/tiny-lite"), "sf4", "64", "f16");
    let q = Model::open(&dir.path().join("q"), Options::default()).unwrap();
    let s = bits_per_byte(&q, &text, 256, bytes).unwrap();
    assert_eq!(s.tokens, 64 * 256);
    let delta = s.bits_per_token() - f;
    assert!(
        delta > 0.005 && delta < 0.15,
        "sf4 costs {delta} bits per byte (f32 {f})"
    );
}

/// Fused 3-D experts with a different codebook per expert (nf4 and e2m1 alternating): the
/// packed model must use expert e's own table, as the dequantized one does.
#[test]
fn fused_experts_use_their_own_codebooks() {
    use tquant::formats::Format;
    use tquant::model::{checkpoint_source, MemorySource, QuantTensor};
    let q = BlockQuantizer {
        block: BlockSize::Elements(16),
        scale_dtype: ScaleDtype::F32,
    };
    let format = |e: usize| -> Format { if e % 2 == 0 { "nf4" } else { "e2m1" }.parse().unwrap() };
    let fused = |name: &str| name.contains(".experts.");
    let per_expert = |name: &str, shape: &[usize], values: &[f32]| {
        let (rows, cols) = (shape[1], shape[2]);
        values
            .chunks(rows * cols)
            .enumerate()
            .map(|(e, m)| {
                let f = format(e);
                (q.quantize(f.codebook(), m, rows, cols).unwrap(), f)
            })
            .inspect(|_| assert!(fused(name)))
            .collect::<Vec<_>>()
    };
    let src = checkpoint_source(&fixture("lite")).unwrap();
    let config = Config::from_path(&fixture("lite")).unwrap();
    let mut packed = MemorySource::over(&src);
    let mut dequantized = MemorySource::over(&src);
    for layer in 1..3 {
        for part in ["gate_up_proj", "down_proj"] {
            let name = format!("model.layers.{layer}.mlp.experts.{part}");
            let TensorData::Dense { shape, values } = src.tensor(&name).unwrap() else {
                panic!("{name} is float in the fixture")
            };
            let parts = per_expert(&name, &shape, &values);
            let deq: Vec<f32> = parts
                .iter()
                .flat_map(|(m, f)| m.dequantize(f.codebook()))
                .collect();
            dequantized.insert(
                name.clone(),
                TensorData::Dense {
                    shape: shape.clone(),
                    values: deq,
                },
            );
            let qt = QuantTensor::from_matrices(
                parts
                    .into_iter()
                    .map(|(m, f)| (m, f.codebook().values().to_vec()))
                    .collect(),
            )
            .unwrap();
            assert_eq!(qt.tables.len(), 8);
            packed.insert(name, TensorData::Quantized(qt));
        }
    }
    let a = Model::from_source(config.clone(), &packed, Options::default()).unwrap();
    let b = Model::from_source(config, &dequantized, Options::default()).unwrap();
    assert!(a.is_quantized() && !b.is_quantized());
    let d = max_diff(&logits(&a), &logits(&b));
    assert!(d < 1e-4, "per-expert codebooks: {d}");
}

/// The q8_0 embeddings and lm_head of a default conversion run from the memory map exactly as
/// the same q8_0 matrices held in memory, quantized from the original's values.
#[test]
fn q8_0_embeddings_and_head_run_from_the_map() {
    use tquant::formats::q8_0::Q8Matrix;
    use tquant::model::{checkpoint_source, MemorySource, Q8Data};
    let tiny = root().join("examples/tiny-lite");
    let dir = quantize(&tiny, "sf4", "64", "f16");
    let q = dir.path().join("q");
    let model = Model::open(&q, Options::default()).unwrap();
    let from_file = logits(&model);
    let (file, original) = (
        checkpoint_source(&q).unwrap(),
        checkpoint_source(&tiny).unwrap(),
    );
    let mut memory = MemorySource::over(&file);
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        assert!(
            matches!(file.tensor(name).unwrap(), TensorData::Q8 { .. }),
            "{name}"
        );
        let TensorData::Dense { shape, values } = original.tensor(name).unwrap() else {
            panic!("{name} is float in the original")
        };
        let m = Q8Matrix::quantize(&values, shape[0], shape[1]).unwrap();
        memory.insert(
            name,
            TensorData::Q8 {
                shape,
                data: Q8Data::owned(m),
            },
        );
    }
    let config = Config::from_path(&q).unwrap();
    let in_memory = logits(&Model::from_source(config, &memory, Options::default()).unwrap());
    assert_eq!(max_diff(&from_file, &in_memory), 0.0);
}
