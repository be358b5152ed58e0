//! Generated sharded MoE checkpoints, routed experts per expert and fused 3-D: every expert
//! gets its own scales and fitted codebook, shards and index mirror the input, the output is
//! deterministic, and the in-memory quantizer writes the same bytes as the converter.

use crate::convert_support;

use convert_support::*;
use serde_json::Value;
use std::path::Path;
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::inspect::verify;
use tquant::convert::{quantize_tensor, Checkpoint, ConvertOptions, KeepAs, Weight};

fn convert(input: &Path, out: &Path, threads: usize) -> tquant::convert::ConvertSummary {
    let run = RunOptions {
        force: false,
        threads: Some(threads),
    };
    // Embeddings and lm_head at source precision: the shards' counts are the 4-bit matrices.
    let opts = ConvertOptions {
        keep_as: KeepAs::Source,
        ..ConvertOptions::default()
    };
    tquant::convert::convert(input, out, &opts, &run, &NoProgress).unwrap()
}

#[test]
fn per_expert_shards_and_index_mirror_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    write_checkpoint(&input, &moe_model(false, 1), &moe_config());
    let summary = convert(&input, &out, 2);
    // 2 x 4 attention + 3 dense + 3 shared + 4 x 3 experts.
    assert_eq!(summary.quantized, 8 + 3 + 3 + 12);
    assert_eq!(summary.skipped, 2, "rotary_emb.inv_freq is left out");

    let names: Vec<String> = files(&out).into_iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        files(&input).into_iter().map(|f| f.0).collect::<Vec<_>>()
    );
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let q = Checkpoint::open(&out).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), q.raw_names().count());
    for (name, file) in map {
        let (shard, _) = q.locate(name).unwrap();
        assert_eq!(shard.file_name(), file.as_str().unwrap(), "{name}");
    }
    let original = Checkpoint::open(&input).unwrap();
    let report = verify(&original, &q).unwrap();
    assert!(report.kept_different.is_empty());
    assert_eq!(report.missing.len(), 2);
    for t in &report.tensors {
        assert!(t.nmse < 0.02 && t.cosine > 0.99, "{}: {t:?}", t.name);
    }
    // Heavier-tailed experts get smaller fitted nu (block-standardised), and nothing is shared.
    let nu = |j: usize| {
        let name = format!("model.layers.1.mlp.experts.{j}.gate_proj.weight");
        q.quant_info(&name).unwrap().matrices[0].nu.unwrap()
    };
    assert!(
        nu(0) < nu(1) && nu(1) < nu(3),
        "{} {} {}",
        nu(0),
        nu(1),
        nu(3)
    );
    assert_eq!(q.config().unwrap()["quantization_config"]["nu"], "fit");
}

#[test]
fn fused_experts_get_their_own_scales_and_codebooks() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    let model = moe_model(true, 2);
    write_checkpoint(&input, &model, &moe_config());
    convert(&input, &out, 2);
    let q = Checkpoint::open(&out).unwrap();
    let name = "model.layers.1.mlp.experts.gate_up_proj";
    let Weight::Quantized(v) = q.get(name).unwrap() else {
        panic!("fused experts are quantized")
    };
    assert_eq!(v.shape(), [EXPERTS, 2 * MOE_INTER, HIDDEN]);
    assert_eq!(v.experts(), EXPERTS);
    let nus: Vec<f64> = v.info.matrices.iter().map(|m| m.nu.unwrap()).collect();
    assert!(nus[0] < nus[3], "expert nu {nus:?}");
    assert_ne!(v.codebook(0), v.codebook(3));
    // Each expert quantized alone as a 2-D matrix gives exactly the bytes of its slice.
    let spec = model[2].iter().find(|s| s.name == name).unwrap();
    let per = 2 * MOE_INTER * HIDDEN;
    let bf = |x: &[f32]| -> Vec<f32> {
        x.iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect()
    };
    for e in 0..EXPERTS {
        let alone = quantize_tensor(
            name,
            &bf(&spec.values[e * per..(e + 1) * per]),
            &[2 * MOE_INTER, HIDDEN],
            tquant::convert::Dtype::BF16,
            &ConvertOptions::default(),
        )
        .unwrap();
        let m = v.matrix(e).unwrap();
        assert_eq!(m.codes, alone.codes.as_slice(), "expert {e} codes");
        assert_eq!(m.scales, alone.scales.as_slice(), "expert {e} scales");
        assert_eq!(m.table, alone.info.matrices[0].codebook.as_slice());
    }
    // The whole fused tensor through the in-memory API equals the file too.
    let whole = quantize_tensor(
        name,
        &bf(&spec.values),
        &spec.shape,
        tquant::convert::Dtype::BF16,
        &ConvertOptions::default(),
    )
    .unwrap();
    assert_eq!(whole.codes, v.codes);
    assert_eq!(whole.scales, v.scales);
    assert_eq!(whole.dequantize(), v.dequantize().unwrap());
    let report = verify(&Checkpoint::open(&input).unwrap(), &q).unwrap();
    assert!(report.tensors.iter().all(|t| t.nmse < 0.02));
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_checkpoint(&input, &moe_model(true, 3), &moe_config());
    convert(&input, &tmp.path().join("a"), 1);
    convert(&input, &tmp.path().join("b"), 3);
    assert_eq!(files(&tmp.path().join("a")), files(&tmp.path().join("b")));
}

#[test]
fn non_finite_weights_are_refused_and_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    let mut model = moe_model(false, 4);
    let t = model[2]
        .iter_mut()
        .find(|s| s.name.ends_with("experts.2.up_proj.weight"))
        .unwrap();
    t.values[5] = f32::NAN;
    t.values[70] = f32::INFINITY;
    t.values[71] = f32::NEG_INFINITY;
    write_checkpoint(&input, &model, &moe_config());
    let err = tquant::convert::convert(
        &input,
        &out,
        &ConvertOptions::default(),
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.layers.1.mlp.experts.2.up_proj.weight")
            && err.contains("3 NaN or infinite"),
        "{err}"
    );
    assert!(err.contains("model-00003-of-00003.safetensors"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary directory left"
    );
}
