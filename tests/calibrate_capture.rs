//! Activation capture (tquant_model::calibrate) against a naive forward pass written here from
//! the checkpoint's tensors in f64: its logits must match the model's (so it computes the same
//! network), and the second moment the capture sums for every linear layer must equal `X^T X` of
//! the inputs the naive pass hands that layer. tiny-lite: plain q projection, default rope,
//! greedy top-2 routing with `norm_topk_prob = false` and scaling 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tquant::convert::calibration::{Calibration, CalibrationSettings};
use tquant::convert::Checkpoint;
use tquant::model::calibrate::{
    capture, to_calibration, CaptureOptions, RouterWeighting, SecondMoments, Site,
};
use tquant::model::{Config, Logits, Model, Options};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_lite() -> PathBuf {
    root().join("examples/tiny-lite")
}

fn text(bytes: usize) -> Vec<u32> {
    let t = std::fs::read(root().join("tests/data/model/heldout_head.txt")).unwrap();
    t[..bytes].iter().map(|&b| b as u32).collect()
}

/// Row-major `[rows, cols]` weights in f64.
struct Mat {
    rows: usize,
    cols: usize,
    v: Vec<f64>,
}

struct Weights {
    ckpt: Checkpoint,
}

impl Weights {
    fn get(&self, name: &str) -> Vec<f64> {
        let w = self
            .ckpt
            .get(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        w.to_f32().unwrap().iter().map(|&x| x as f64).collect()
    }
    fn mat(&self, name: &str) -> Mat {
        let shape = self.ckpt.get(name).unwrap().shape().to_vec();
        Mat {
            rows: shape[0],
            cols: shape[1],
            v: self.get(name),
        }
    }
}

/// `x W^T` for `x` of `[n, cols]`.
fn linear(x: &[f64], n: usize, w: &Mat) -> Vec<f64> {
    let mut y = vec![0.0; n * w.rows];
    for t in 0..n {
        for r in 0..w.rows {
            y[t * w.rows + r] = (0..w.cols)
                .map(|c| x[t * w.cols + c] * w.v[r * w.cols + c])
                .sum();
        }
    }
    y
}

fn rms_norm(x: &mut [f64], w: &[f64], eps: f64) {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter_mut().zip(w).for_each(|(v, g)| *v *= inv * g);
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Interleaved-pair rotary embedding at position `pos` (rope_theta, default scaling).
fn rope(x: &mut [f64], pos: usize, theta: f64) {
    let d = x.len();
    for i in 0..d / 2 {
        let f = theta.powf(-((2 * i) as f64) / d as f64);
        let (s, c) = (pos as f64 * f).sin_cos();
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/// Every linear layer's input rows of one chunk, with the row weights of routed experts.
type Inputs = BTreeMap<(usize, Site), (Vec<f64>, Vec<f64>)>;

fn push(inputs: &mut Inputs, key: (usize, Site), rows: &[f64], weights: &[f64]) {
    let e = inputs.entry(key).or_default();
    e.0.extend_from_slice(rows);
    e.1.extend_from_slice(weights);
}

/// The naive forward of one chunk from an empty cache: logits `[n, vocab]`, and the inputs.
fn naive_forward(w: &Weights, c: &Config, tokens: &[u32], inputs: &mut Inputs) -> Vec<f64> {
    let (h, n, eps) = (c.hidden_size, tokens.len(), c.rms_norm_eps as f64);
    let theta = match w.ckpt.config().unwrap()["rope_parameters"]["rope_theta"].as_f64() {
        Some(t) => t,
        None => panic!("tiny-lite names rope_theta under rope_parameters"),
    };
    let (heads, nope, rdim, vdim, lora) = (
        c.num_attention_heads,
        c.qk_nope_head_dim,
        c.qk_rope_head_dim,
        c.v_head_dim,
        c.kv_lora_rank,
    );
    let qk = nope + rdim;
    let embed = w.get("model.embed_tokens.weight");
    let mut x: Vec<f64> = tokens
        .iter()
        .flat_map(|&t| embed[t as usize * h..(t as usize + 1) * h].to_vec())
        .collect();
    let normed = |x: &[f64], name: &str| -> Vec<f64> {
        let g = w.get(name);
        let mut y = x.to_vec();
        y.chunks_mut(h).for_each(|r| rms_norm(r, &g, eps));
        y
    };
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let a = format!("{p}.self_attn");
        let xn = normed(&x, &format!("{p}.input_layernorm.weight"));
        push(inputs, (l, Site::AttnInput), &xn, &[]);
        let mut q = linear(&xn, n, &w.mat(&format!("{a}.q_proj.weight")));
        let mut ckv = linear(&xn, n, &w.mat(&format!("{a}.kv_a_proj_with_mqa.weight")));
        let kv_norm = w.get(&format!("{a}.kv_a_layernorm.weight"));
        let mut c_lat = vec![0.0; n * lora];
        for t in 0..n {
            let row = &mut ckv[t * (lora + rdim)..(t + 1) * (lora + rdim)];
            rms_norm(&mut row[..lora], &kv_norm, eps);
            rope(&mut row[lora..], t, theta);
            c_lat[t * lora..(t + 1) * lora].copy_from_slice(&row[..lora]);
            for hd in 0..heads {
                rope(&mut q[t * heads * qk + hd * qk + nope..][..rdim], t, theta);
            }
        }
        push(inputs, (l, Site::KvLatent), &c_lat, &[]);
        let kv = linear(&c_lat, n, &w.mat(&format!("{a}.kv_b_proj.weight")));
        let scale = 1.0 / (qk as f64).sqrt();
        let mut attn = vec![0.0; n * heads * vdim];
        for hd in 0..heads {
            for t in 0..n {
                let qv = &q[t * heads * qk + hd * qk..][..qk];
                let mut s: Vec<f64> = (0..=t)
                    .map(|j| {
                        let kn = &kv[j * heads * (nope + vdim) + hd * (nope + vdim)..][..nope];
                        let kp = &ckv[j * (lora + rdim) + lora..][..rdim];
                        let dot: f64 = qv[..nope].iter().zip(kn).map(|(a, b)| a * b).sum::<f64>()
                            + qv[nope..].iter().zip(kp).map(|(a, b)| a * b).sum::<f64>();
                        dot * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|v| *v = (*v - m).exp());
                let z: f64 = s.iter().sum();
                for (j, pj) in s.iter().enumerate() {
                    let vv = &kv[j * heads * (nope + vdim) + hd * (nope + vdim) + nope..][..vdim];
                    for (o, &vj) in attn[t * heads * vdim + hd * vdim..][..vdim]
                        .iter_mut()
                        .zip(vv)
                    {
                        *o += pj / z * vj;
                    }
                }
            }
        }
        push(inputs, (l, Site::AttnOutput), &attn, &[]);
        let o = linear(&attn, n, &w.mat(&format!("{a}.o_proj.weight")));
        x.iter_mut().zip(&o).for_each(|(v, d)| *v += d);

        let xn = normed(&x, &format!("{p}.post_attention_layernorm.weight"));
        push(inputs, (l, Site::FfnInput), &xn, &[]);
        let mlp = |prefix: &str, xs: &[f64], m: usize| -> (Vec<f64>, Vec<f64>) {
            let g = linear(xs, m, &w.mat(&format!("{prefix}.gate_proj.weight")));
            let u = linear(xs, m, &w.mat(&format!("{prefix}.up_proj.weight")));
            let act: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| silu(g) * u).collect();
            let y = linear(&act, m, &w.mat(&format!("{prefix}.down_proj.weight")));
            (act, y)
        };
        let m = format!("{p}.mlp");
        let y = if !c.is_moe_layer(l) {
            let (act, y) = mlp(&m, &xn, n);
            push(inputs, (l, Site::MlpAct), &act, &[]);
            y
        } else {
            let e = c.n_routed_experts.unwrap();
            let logits = linear(&xn, n, &w.mat(&format!("{m}.gate.weight")));
            let mut routed: Vec<Vec<(usize, f64)>> = vec![Vec::new(); e];
            for t in 0..n {
                let l = &logits[t * e..(t + 1) * e];
                let mx = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = l.iter().map(|v| (v - mx).exp()).sum();
                let p: Vec<f64> = l.iter().map(|v| (v - mx).exp() / z).collect();
                let mut idx: Vec<usize> = (0..e).collect();
                idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
                for &j in &idx[..c.num_experts_per_tok] {
                    routed[j].push((t, p[j] * c.routed_scaling_factor as f64));
                }
            }
            let mut y = vec![0.0; n * h];
            for (j, toks) in routed.iter().enumerate() {
                if toks.is_empty() {
                    continue;
                }
                let xs: Vec<f64> = toks
                    .iter()
                    .flat_map(|&(t, _)| xn[t * h..(t + 1) * h].to_vec())
                    .collect();
                let wts: Vec<f64> = toks.iter().map(|p| p.1).collect();
                let (act, out) = mlp(&format!("{m}.experts.{j}"), &xs, toks.len());
                push(inputs, (l, Site::ExpertInput(j)), &xs, &wts);
                push(inputs, (l, Site::ExpertAct(j)), &act, &wts);
                for (k, &(t, g)) in toks.iter().enumerate() {
                    for d in 0..h {
                        y[t * h + d] += g * out[k * h + d];
                    }
                }
            }
            let (act, sy) = mlp(&format!("{m}.shared_experts"), &xn, n);
            push(inputs, (l, Site::SharedAct), &act, &[]);
            y.iter_mut().zip(&sy).for_each(|(a, b)| *a += b);
            y
        };
        x.iter_mut().zip(&y).for_each(|(v, d)| *v += d);
    }
    let xn = normed(&x, "model.norm.weight");
    linear(&xn, n, &w.mat("lm_head.weight"))
}

/// `sum_t s_t x_t x_t^T` over rows of width `dim` (`s_t = weight^2`, or 1).
fn second_moment(rows: &[f64], weights: &[f64], dim: usize, squared_weights: bool) -> Vec<f64> {
    let n = rows.len() / dim;
    let mut h = vec![0.0; dim * dim];
    for t in 0..n {
        let s = match weights.get(t) {
            Some(w) if squared_weights => w * w,
            _ => 1.0,
        };
        let x = &rows[t * dim..(t + 1) * dim];
        for i in 0..dim {
            for j in 0..dim {
                h[i * dim + j] += s * x[i] * x[j];
            }
        }
    }
    h
}

fn setup() -> (Model, Weights, Config) {
    let model = Model::open(&tiny_lite(), Options::default()).unwrap();
    let config = model.config().clone();
    let w = Weights {
        ckpt: Checkpoint::open(tiny_lite()).unwrap(),
    };
    (model, w, config)
}

/// Captures `tokens` in windows of `window` and checks every site against the naive pass.
fn check_against_naive(weighting: RouterWeighting, tokens: &[u32], window: usize) {
    let (model, w, config) = setup();
    let mut inputs = Inputs::new();
    for chunk in tokens.chunks(window) {
        let want = naive_forward(&w, &config, chunk, &mut inputs);
        let mut cache = model.new_cache();
        let got = model.forward(chunk, &mut cache, Logits::All).unwrap();
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, &b)| (a - b as f64).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-3,
            "the naive pass is another network: logits differ by {worst}"
        );
    }
    let opts = CaptureOptions { window, weighting };
    let moments: SecondMoments = capture(&model, tokens, &opts).unwrap();
    assert_eq!(
        moments.sites().len(),
        inputs.len(),
        "sites seen: {:?}",
        moments.sites()
    );
    for ((layer, site), (rows, weights)) in &inputs {
        let (n, got) = moments.get(*layer, *site).unwrap();
        let dim = (got.len() as f64).sqrt() as usize;
        assert_eq!(
            n as usize * dim,
            rows.len(),
            "layer {layer} {site:?} token count"
        );
        let want = second_moment(rows, weights, dim, weighting == RouterWeighting::Routed);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-4 * scale,
            "layer {layer} {site:?}: H differs by {worst} (largest entry {scale})"
        );
    }
}

#[test]
fn second_moments_equal_those_of_a_naive_forward() {
    // Two whole windows and a short last one.
    check_against_naive(RouterWeighting::Routed, &text(70), 32);
}

#[test]
fn uniform_weighting_counts_every_routed_token_alike() {
    check_against_naive(RouterWeighting::Uniform, &text(40), 40);
}

#[test]
fn expert_token_counts_add_up_to_tokens_times_top_k() {
    let (model, w, config) = setup();
    let tokens = text(300);
    let moments = capture(&model, &tokens, &CaptureOptions::default()).unwrap();
    let e = config.n_routed_experts.unwrap();
    let k = config.num_experts_per_tok as u64;
    let mut moe_layers = 0;
    for l in (0..config.num_hidden_layers).filter(|&l| config.is_moe_layer(l)) {
        moe_layers += 1;
        let counts: Vec<u64> = (0..e)
            .map(|j| moments.get(l, Site::ExpertInput(j)).map_or(0, |m| m.0))
            .collect();
        assert_eq!(
            counts.iter().sum::<u64>(),
            tokens.len() as u64 * k,
            "layer {l}: {counts:?}"
        );
        for (j, &count) in counts.iter().enumerate() {
            let act = moments.get(l, Site::ExpertAct(j)).map_or(0, |m| m.0);
            assert_eq!(
                act, count,
                "layer {l} expert {j}: gate/up and down see the same tokens"
            );
        }
        for site in [
            Site::AttnInput,
            Site::KvLatent,
            Site::AttnOutput,
            Site::FfnInput,
        ] {
            assert_eq!(moments.get(l, site).unwrap().0, tokens.len() as u64);
        }
    }
    assert_eq!(moe_layers, 2);

    // The calibration names exactly the checkpoint's quantizable matrices (and the router).
    let has = |name: &str| w.ckpt.get(name).is_ok();
    let outline = Calibration::new(
        CalibrationSettings::default(),
        "test".into(),
        tokens.len() as u64,
    );
    let all = 0..config.num_hidden_layers;
    let cal = to_calibration(moments, &config, &has, outline, all).unwrap();
    let q = cal
        .get("model.layers.0.self_attn.q_proj.weight", None)
        .unwrap();
    let kv_a = cal
        .get("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", None)
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(q, kv_a), "one input, one statistic");
    assert_eq!(q.tokens(), 300);
    let d = cal
        .get("model.layers.1.mlp.experts.3.down_proj.weight", None)
        .unwrap();
    assert_eq!(d.dim(), config.moe_intermediate_size);
    assert!(cal
        .get("model.layers.0.self_attn.q_a_proj.weight", None)
        .is_none());
    assert!(cal
        .get("model.layers.1.mlp.experts.gate_up_proj", Some(3))
        .is_none());
    // 3 attention inputs x 3 layers (q, kv_a, kv_b, o = 4 names), dense mlp 3 names, two MoE
    // layers with router, shared gate/up/down and 8 experts x 3 names.
    assert_eq!(cal.len(), 3 * 4 + 3 + 2 * (1 + 3 + 8 * 3));
}
