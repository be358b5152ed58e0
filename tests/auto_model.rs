//! Checkpoints made with searched scales (`--scale-rule search`, some of them negative) and with
//! a per-matrix format choice (`--format auto`) run through tquant-model's kernels exactly as
//! their dequantized weights do, and record what was chosen.

use crate::support;

use std::path::{Path, PathBuf};
use support::{max_diff, Dequantized};
use tempfile::TempDir;
use tquant::convert::{
    convert, Checkpoint, ConvertOptions, Layout, NoProgress, Policy, RunOptions, Weight,
};
use tquant::formats::ScaleRule;
use tquant::model::{Logits, Model, Options};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/model")
        .join(name)
}

const TOKENS: [u32; 10] = [3, 17, 92, 5, 64, 1, 120, 33, 7, 88];

fn quantize(format: &str, scale: &str, rule: ScaleRule) -> TempDir {
    quantize_nu(format, None, scale, rule)
}

fn quantize_nu(format: &str, nu: Option<&str>, scale: &str, rule: ScaleRule) -> TempDir {
    let dir = TempDir::new().unwrap();
    let opts = ConvertOptions::from_args(
        Some(format),
        nu,
        Some("32"),
        Some(scale),
        Layout::Tquant,
        Policy::default(),
    )
    .unwrap()
    .with_scale_rule(rule)
    .unwrap();
    convert(
        &fixture("lite"),
        &dir.path().join("q"),
        &opts,
        &RunOptions::default(),
        &NoProgress,
    )
    .unwrap();
    dir
}

fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache();
    model.forward(&TOKENS, &mut cache, Logits::All).unwrap()
}

/// The packed model (kernels on codes and scales) against the dequantized weights.
fn assert_runs_as_dequantized(dir: &TempDir, what: &str) {
    let q = dir.path().join("q");
    let packed = Model::open(&q, Options::default()).unwrap();
    assert!(packed.is_quantized());
    let config = tquant::model::Config::from_path(&q).unwrap();
    let deq = Model::from_source(
        config,
        &Dequantized(Checkpoint::open(&q).unwrap()),
        Options::default(),
    )
    .unwrap();
    let d = max_diff(&logits(&packed), &logits(&deq));
    assert!(d < 1e-3, "{what}: quantized vs dequantized {d}");
}

/// Every scale of every 4-bit tensor, decoded (the q8_0 embeddings and lm_head have no
/// codebook and positive scales).
fn all_scales(ckpt: &Checkpoint) -> Vec<f32> {
    let mut out = Vec::new();
    for name in ckpt.names() {
        if let Weight::Quantized(q) = ckpt.get(name).unwrap() {
            if q.info.is_q8_0() {
                continue;
            }
            for e in 0..q.experts() {
                let m = q.matrix(e).unwrap();
                let n = m.scales.len() / m.scale_dtype.size();
                out.extend((0..n).map(|i| m.scale_dtype.read(m.scales, i)));
            }
        }
    }
    out
}

#[test]
fn searched_scales_run_through_the_kernels_as_dequantized() {
    for (format, scale) in [("nf4", "f16"), ("apot4_sp", "bf16"), ("int4_full", "f32")] {
        let dir = quantize(format, scale, ScaleRule::Search);
        let ckpt = Checkpoint::open(dir.path().join("q")).unwrap();
        let scales = all_scales(&ckpt);
        // The search flips the sign of a table that is not symmetric about zero when that fits
        // a block better: such blocks have negative scales, which the kernels must honour.
        assert!(
            scales.iter().any(|&s| s < 0.0) && scales.iter().any(|&s| s > 0.0),
            "{format}: expected scales of both signs"
        );
        let Weight::Quantized(q) = ckpt.get("model.layers.0.self_attn.q_proj.weight").unwrap()
        else {
            panic!("q_proj is quantized");
        };
        assert_eq!(q.info.scale_rule, Some(ScaleRule::Search));
        assert_runs_as_dequantized(&dir, &format!("{format} search"));
    }
}

#[test]
fn searched_scales_lower_the_weight_error_of_every_tensor() {
    let original = Checkpoint::open(fixture("lite")).unwrap();
    let absmax = quantize("nf4", "f16", ScaleRule::Absmax);
    let search = quantize("nf4", "f16", ScaleRule::Search);
    let a = tquant::convert::inspect::verify(
        &original,
        &Checkpoint::open(absmax.path().join("q")).unwrap(),
    )
    .unwrap();
    let s = tquant::convert::inspect::verify(
        &original,
        &Checkpoint::open(search.path().join("q")).unwrap(),
    )
    .unwrap();
    for (x, y) in a.tensors.iter().zip(&s.tensors) {
        assert_eq!(x.name, y.name);
        assert!(y.nmse <= x.nmse, "{}: {} > {}", x.name, y.nmse, x.nmse);
    }
    assert!(
        s.nmse < 0.9 * a.nmse,
        "search {} vs absmax {}",
        s.nmse,
        a.nmse
    );
}

#[test]
fn auto_checkpoint_records_each_experts_choice_and_runs_as_dequantized() {
    for rule in [ScaleRule::Absmax, ScaleRule::Search] {
        let dir = quantize("auto", "f16", rule);
        let ckpt = Checkpoint::open(dir.path().join("q")).unwrap();
        let Weight::Quantized(q) = ckpt.get("model.layers.1.mlp.experts.gate_up_proj").unwrap()
        else {
            panic!("fused experts are quantized");
        };
        assert_eq!(
            q.info.format,
            "auto:nf4,sf4_search,apot4_sp,e2m1_sp,int4,int4_full"
        );
        assert_eq!(q.info.scale_rule, Some(rule));
        assert_eq!(q.info.matrices.len(), 8);
        let candidates = ["nf4", "sf4", "apot4_sp", "e2m1_sp", "int4", "int4_full"];
        for (e, m) in q.info.matrices.iter().enumerate() {
            let family = m.format.split(':').next().unwrap();
            assert!(candidates.contains(&family), "expert {e}: {}", m.format);
            // The stored table is the named format's, and the whole-matrix fit is recorded.
            let f: tquant::formats::Format = m.format.parse().unwrap();
            assert_eq!(q.codebook(e), f.codebook().values(), "expert {e}");
            assert!(m.fit_tensor.is_some_and(|t| t.nu > 0.0));
        }
        assert_runs_as_dequantized(&dir, &format!("auto {rule}"));
    }
}

#[test]
fn nu_search_with_searched_scales_records_both() {
    let dir = quantize_nu("sf4", Some("search"), "f16", ScaleRule::Search);
    let ckpt = Checkpoint::open(dir.path().join("q")).unwrap();
    let Weight::Quantized(q) = ckpt.get("model.layers.2.mlp.experts.down_proj").unwrap() else {
        panic!("fused experts are quantized");
    };
    assert_eq!(q.info.format, "sf4");
    assert_eq!(q.info.scale_rule, Some(ScaleRule::Search));
    for m in &q.info.matrices {
        let nu = m.nu.expect("searched nu");
        assert_eq!(m.format, format!("sf4:nu={nu}"));
        assert!(m.fit.is_none() && m.fit_tensor.is_some());
    }
    assert_runs_as_dequantized(&dir, "sf4 nu search, scale search");
}
