//! Feed-forward blocks: the SiLU-gated MLP (dense layers, routed and shared experts) and
//! DeepSeekMoE routing (f32 softmax gate, greedy or group-limited top-k).

use crate::calibrate::{Record, Site, TapAt};
use crate::config::{Config, TopkMethod};
use crate::kernels::Mode;
use crate::linear::Linear;
use crate::weights::Loader;
use crate::ModelError;

/// Gate and up projections: one stacked matrix (gate rows first), or two.
#[derive(Debug)]
enum GateUp {
    Fused(Linear),
    Split(Linear, Linear),
}

/// `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    gate_up: GateUp,
    down: Linear,
    width: usize,
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl Mlp {
    /// Gate and up kept apart when quantized (zero copy); stacked into one product when float.
    fn new(gate: Linear, up: Linear, down: Linear) -> Self {
        let width = gate.rows();
        let gate_up = match (&gate, &up) {
            (Linear::Dense(g), Linear::Dense(u)) => {
                let mut v = g.values().to_vec();
                v.extend_from_slice(u.values());
                GateUp::Fused(Linear::Dense(crate::linear::DenseMatrix::new(
                    2 * width,
                    g.cols,
                    v,
                )))
            }
            _ => GateUp::Split(gate, up),
        };
        Self {
            gate_up,
            down,
            width,
        }
    }

    /// Loads `{prefix}.{gate,up,down}_proj.weight`.
    pub(crate) fn load(
        ld: &Loader<'_>,
        prefix: &str,
        width: usize,
        hidden: usize,
    ) -> Result<Self, ModelError> {
        Ok(Self::new(
            ld.matrix(&format!("{prefix}.gate_proj.weight"), width, hidden)?,
            ld.matrix(&format!("{prefix}.up_proj.weight"), width, hidden)?,
            ld.matrix(&format!("{prefix}.down_proj.weight"), hidden, width)?,
        ))
    }

    pub(crate) fn linears(&self) -> Vec<&Linear> {
        match &self.gate_up {
            GateUp::Fused(l) => vec![l, &self.down],
            GateUp::Split(g, u) => vec![g, u, &self.down],
        }
    }

    /// `[n, hidden] -> [n, hidden]`.
    pub fn forward(&self, x: &[f32], n: usize, mode: Mode) -> Result<Vec<f32>, ModelError> {
        self.forward_tapped(x, n, mode, None)
    }

    /// [`Mlp::forward`]; `act_tap` sees down_proj's input `silu(gate) * up`.
    pub(crate) fn forward_tapped(
        &self,
        x: &[f32],
        n: usize,
        mode: Mode,
        act_tap: Option<Record<'_>>,
    ) -> Result<Vec<f32>, ModelError> {
        let w = self.width;
        let mut act = vec![0.0f32; n * w];
        match &self.gate_up {
            GateUp::Fused(gu) => {
                let y = gu.apply(x, n, mode)?;
                for (a, r) in act.chunks_exact_mut(w).zip(y.chunks_exact(2 * w)) {
                    for ((o, &g), &u) in a.iter_mut().zip(&r[..w]).zip(&r[w..]) {
                        *o = silu(g) * u;
                    }
                }
            }
            GateUp::Split(g, u) => {
                let gy = g.apply(x, n, mode)?;
                let uy = u.apply(x, n, mode)?;
                for ((o, &g), &u) in act.iter_mut().zip(&gy).zip(&uy) {
                    *o = silu(g) * u;
                }
            }
        }
        if let Some(r) = act_tap {
            r.emit(&act, n);
        }
        self.down.apply(&act, n, mode)
    }
}

/// Routing options from the config.
#[derive(Debug, Clone)]
pub struct Router {
    pub top_k: usize,
    pub method: TopkMethod,
    pub n_group: usize,
    pub topk_group: usize,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f32,
}

impl Router {
    pub fn from_config(c: &Config) -> Self {
        Self {
            top_k: c.num_experts_per_tok,
            method: c.topk_method,
            n_group: c.n_group.max(1),
            topk_group: c.topk_group,
            norm_topk_prob: c.norm_topk_prob,
            routed_scaling_factor: c.routed_scaling_factor,
        }
    }

    /// Experts and weights for one token's router logits (DeepSeek's `MoEGate`): softmax,
    /// optional group limit (groups ranked by their best expert), top-k, then either
    /// renormalised (`norm_topk_prob`, k > 1) or scaled by `routed_scaling_factor`.
    ///
    /// This is DeepSeek's own rule. transformers 5.24 ignores `norm_topk_prob` and always
    /// scales; the two agree for every released V2 config (`norm_topk_prob: false`).
    pub fn route(&self, logits: &[f32]) -> Vec<(usize, f32)> {
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut s: Vec<f32> = logits.iter().map(|&l| (l - m).exp()).collect();
        let sum: f32 = s.iter().sum();
        s.iter_mut().for_each(|v| *v /= sum);
        if self.method == TopkMethod::GroupLimitedGreedy && self.n_group > 1 {
            let size = s.len() / self.n_group;
            let best: Vec<f32> = s
                .chunks(size)
                .map(|g| g.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)))
                .collect();
            let keep = top_indices(&best, self.topk_group);
            for (g, chunk) in s.chunks_mut(size).enumerate() {
                if !keep.contains(&g) {
                    chunk.fill(0.0);
                }
            }
        }
        let idx = top_indices(&s, self.top_k);
        let mut w: Vec<(usize, f32)> = idx.into_iter().map(|i| (i, s[i])).collect();
        if self.top_k > 1 && self.norm_topk_prob {
            let t: f32 = w.iter().map(|p| p.1).sum::<f32>() + 1e-20;
            w.iter_mut().for_each(|p| p.1 /= t);
        } else {
            w.iter_mut().for_each(|p| p.1 *= self.routed_scaling_factor);
        }
        w
    }
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// A DeepSeekMoE block: router, routed experts, shared experts.
#[derive(Debug)]
pub struct Moe {
    gate: Linear,
    experts: Vec<Mlp>,
    shared: Option<Mlp>,
    router: Router,
}

impl Moe {
    pub(crate) fn load(ld: &Loader<'_>, c: &Config, i: usize) -> Result<Self, ModelError> {
        let p = format!("model.layers.{i}.mlp");
        let (h, e, ie) = (
            c.hidden_size,
            c.n_routed_experts.unwrap_or(0),
            c.moe_intermediate_size,
        );
        let gate = ld.matrix(&format!("{p}.gate.weight"), e, h)?;
        let fused = format!("{p}.experts.gate_up_proj");
        let experts = if ld.src.contains(&fused) {
            // transformers v5 export: [E, 2 * Ie, H] (gate rows, then up rows) and [E, H, Ie].
            let gu = ld.stacked(&fused, e, 2 * ie, h)?;
            let down = ld.stacked(&format!("{p}.experts.down_proj"), e, h, ie)?;
            gu.into_iter()
                .zip(down)
                .map(|(gu, down)| Mlp {
                    gate_up: GateUp::Fused(gu),
                    down,
                    width: ie,
                })
                .collect()
        } else {
            (0..e)
                .map(|j| Mlp::load(ld, &format!("{p}.experts.{j}"), ie, h))
                .collect::<Result<Vec<_>, _>>()?
        };
        let shared = if c.n_shared_experts > 0 {
            Some(Mlp::load(
                ld,
                &format!("{p}.shared_experts"),
                ie * c.n_shared_experts,
                h,
            )?)
        } else {
            None
        };
        Ok(Self {
            gate,
            experts,
            shared,
            router: Router::from_config(c),
        })
    }

    pub(crate) fn linears(&self) -> Vec<&Linear> {
        let mut v = vec![&self.gate];
        for m in self.experts.iter().chain(&self.shared) {
            v.extend(m.linears());
        }
        v
    }

    /// Linear layers one token reads: the router, `top_k` experts and the shared experts.
    pub(crate) fn active_bytes(&self) -> usize {
        let per_expert: usize = self
            .experts
            .first()
            .map(|m| m.linears().iter().map(|l| l.bytes()).sum())
            .unwrap_or(0);
        let shared: usize = self
            .shared
            .iter()
            .flat_map(|m| m.linears())
            .map(|l| l.bytes())
            .sum();
        self.gate.bytes() + self.router.top_k * per_expert + shared
    }

    /// `[n, hidden] -> [n, hidden]`: each expert runs once on all the tokens routed to it.
    pub fn forward(&self, x: &[f32], n: usize, mode: Mode) -> Result<Vec<f32>, ModelError> {
        self.forward_tapped(x, n, mode, None)
    }

    /// [`Moe::forward`]; `tap` sees each expert's tokens (with their routing weights) and the
    /// down_proj inputs of the experts and the shared experts.
    pub(crate) fn forward_tapped(
        &self,
        x: &[f32],
        n: usize,
        mode: Mode,
        tap: Option<TapAt<'_>>,
    ) -> Result<Vec<f32>, ModelError> {
        let h = x.len() / n.max(1);
        let logits = self.gate.apply(x, n, mode)?;
        let e = self.experts.len();
        // For each expert, the tokens it serves and their weights.
        let mut assigned: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e];
        for (t, l) in logits.chunks_exact(e).enumerate() {
            for (j, w) in self.router.route(l) {
                assigned[j].push((t, w));
            }
        }
        let work = n * self.router.top_k * 3 * h * self.experts.first().map_or(0, |m| m.width);
        let outputs = crate::map_range(e, work, |j| {
            let toks = &assigned[j];
            if toks.is_empty() {
                return Ok(None);
            }
            let xs: Vec<f32> = toks
                .iter()
                .flat_map(|&(t, _)| x[t * h..(t + 1) * h].iter().copied())
                .collect();
            let Some(t) = tap else {
                return self.experts[j].forward(&xs, toks.len(), mode).map(Some);
            };
            let weights: Vec<f32> = toks.iter().map(|p| p.1).collect();
            t.record(Site::ExpertInput(j), &xs, toks.len(), Some(&weights));
            let act = Some(t.at(Site::ExpertAct(j), Some(&weights)));
            self.experts[j]
                .forward_tapped(&xs, toks.len(), mode, act)
                .map(Some)
        })?;
        let mut y = vec![0.0f32; n * h];
        for (toks, out) in assigned.iter().zip(&outputs) {
            let Some(out) = out else { continue };
            for (&(t, w), o) in toks.iter().zip(out.chunks_exact(h)) {
                y[t * h..(t + 1) * h]
                    .iter_mut()
                    .zip(o)
                    .for_each(|(a, &b)| *a += w * b);
            }
        }
        if let Some(s) = &self.shared {
            let sy = s.forward_tapped(x, n, mode, tap.map(|t| t.at(Site::SharedAct, None)))?;
            y.iter_mut().zip(&sy).for_each(|(a, &b)| *a += b);
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(method: TopkMethod, k: usize, norm: bool, scale: f32) -> Router {
        Router {
            top_k: k,
            method,
            n_group: 4,
            topk_group: 2,
            norm_topk_prob: norm,
            routed_scaling_factor: scale,
        }
    }

    fn softmax(l: &[f32]) -> Vec<f32> {
        let s: f32 = l.iter().map(|v| v.exp()).sum();
        l.iter().map(|v| v.exp() / s).collect()
    }

    #[test]
    fn greedy_takes_global_top_k_scaled() {
        let l = [0.1, 2.0, -1.0, 1.5, 0.3, 1.9, 0.0, -2.0];
        let p = softmax(&l);
        let r = router(TopkMethod::Greedy, 3, false, 2.5).route(&l);
        let idx: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(idx, [1, 5, 3]);
        for (i, w) in r {
            assert!((w - 2.5 * p[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn group_limited_greedy_only_picks_from_best_groups() {
        // Groups of 2: {0,1} best 2.0, {2,3} best 1.5, {4,5} best 1.9, {6,7} best 0.0.
        // Top-2 groups are {0,1} and {4,5}; expert 3 (1.5) is excluded although it is 3rd overall.
        let l = [0.1, 2.0, -1.0, 1.5, 0.3, 1.9, 0.0, -2.0];
        let r = router(TopkMethod::GroupLimitedGreedy, 3, false, 1.0).route(&l);
        let idx: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(idx, [1, 5, 4]);
    }

    #[test]
    fn norm_topk_prob_renormalises_without_scaling() {
        let l = [0.1, 2.0, -1.0, 1.5, 0.3, 1.9, 0.0, -2.0];
        let r = router(TopkMethod::Greedy, 2, true, 16.0).route(&l);
        let s: f32 = r.iter().map(|x| x.1).sum();
        assert!((s - 1.0).abs() < 1e-6);
        let p = softmax(&l);
        assert!((r[0].1 - p[1] / (p[1] + p[5])).abs() < 1e-6);
    }
}
