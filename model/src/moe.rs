//! Feed-forward blocks: the SiLU-gated MLP (dense layers, routed and shared experts) and
//! DeepSeekMoE routing: V2's f32 softmax gate (greedy or group-limited top-k) and V3's sigmoid
//! gate with a selection-only bias (`noaux_tc`).

use crate::config::{Config, TopkMethod};
use crate::kernels::Mode;
use crate::linear::Linear;
use crate::observe::{Record, Site, TapAt};
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

/// Gated activations from which `silu(gate) * up` is spread over the threads.
const SILU_PARALLEL_MIN: usize = 1 << 16;

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl Mlp {
    /// Gate and up kept apart when quantized or bf16 (zero copy); stacked into one product when f32.
    fn new(gate: Linear, up: Linear, down: Linear) -> Self {
        let width = gate.rows();
        let f32_parts = match (&gate, &up) {
            (Linear::Dense(g), Linear::Dense(u)) => g.f32_values().zip(u.f32_values()),
            _ => None,
        };
        // bf16 matrices stay apart too: stacking them would copy weights borrowed from the map.
        let gate_up = match f32_parts {
            Some((g, u)) => GateUp::Fused(Linear::Dense(crate::linear::DenseMatrix::new(
                2 * width,
                gate.cols(),
                [g, u].concat(),
            ))),
            None => GateUp::Split(gate, up),
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
        use rayon::prelude::*;
        let w = self.width;
        let mut act = vec![0.0f32; n * w];
        // Row by row, over the threads when there are many (a dense or shared MLP's prefill:
        // millions of exponentials).
        let parallel = n * w >= SILU_PARALLEL_MIN && rayon::current_num_threads() > 1;
        match &self.gate_up {
            GateUp::Fused(gu) => {
                let y = gu.apply(x, n, mode)?;
                let row = |(a, r): (&mut [f32], &[f32])| {
                    for ((o, &g), &u) in a.iter_mut().zip(&r[..w]).zip(&r[w..]) {
                        *o = silu(g) * u;
                    }
                };
                if parallel {
                    act.par_chunks_mut(w).zip(y.par_chunks(2 * w)).for_each(row);
                } else {
                    act.chunks_mut(w).zip(y.chunks(2 * w)).for_each(row);
                }
            }
            GateUp::Split(g, u) => {
                let gy = g.apply(x, n, mode)?;
                let uy = u.apply(x, n, mode)?;
                let row = |((a, g), u): ((&mut [f32], &[f32]), &[f32])| {
                    for ((o, &g), &u) in a.iter_mut().zip(g).zip(u) {
                        *o = silu(g) * u;
                    }
                };
                if parallel {
                    act.par_chunks_mut(w)
                        .zip(gy.par_chunks(w))
                        .zip(uy.par_chunks(w))
                        .for_each(row);
                } else {
                    act.chunks_mut(w)
                        .zip(gy.chunks(w))
                        .zip(uy.chunks(w))
                        .for_each(row);
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
    /// Routed experts per token.
    pub top_k: usize,
    /// How experts are chosen.
    pub method: TopkMethod,
    /// Expert groups.
    pub n_group: usize,
    /// Groups a token may route to.
    pub topk_group: usize,
    /// Whether the chosen weights are renormalised.
    pub norm_topk_prob: bool,
    /// Factor on the routed output.
    pub routed_scaling_factor: f32,
}

impl Router {
    /// The routing of `c`.
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

    /// Experts and weights for one token's router logits (f32). `bias` is V3's
    /// `e_score_correction_bias`, used by [`TopkMethod::NoauxTc`] only.
    pub fn route(&self, logits: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        match self.method {
            TopkMethod::NoauxTc => self.route_v3(logits, bias),
            TopkMethod::Greedy | TopkMethod::GroupLimitedGreedy => self.route_v2(logits),
        }
    }

    /// DeepSeek's V2 `MoEGate`: softmax, optional group limit (groups ranked by their best
    /// expert), top-k, then either renormalised (`norm_topk_prob`, k > 1) or scaled by
    /// `routed_scaling_factor`.
    ///
    /// This is DeepSeek's own rule. transformers 5.24 ignores `norm_topk_prob` and always
    /// scales; the two agree for every released V2 config (`norm_topk_prob: false`).
    fn route_v2(&self, logits: &[f32]) -> Vec<(usize, f32)> {
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

    /// transformers' `DeepseekV3TopkRouter`: sigmoid scores `s`; the choice is made on
    /// `s + bias`, groups ranked by the sum of their two best, experts outside the
    /// `topk_group` best groups masked to -inf; the weights are the unbiased `s` of the chosen
    /// experts, divided by their sum (+1e-20) when `norm_topk_prob`, then always multiplied
    /// by `routed_scaling_factor`.
    fn route_v3(&self, logits: &[f32], bias: Option<&[f32]>) -> Vec<(usize, f32)> {
        let s: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
        let mut c: Vec<f32> = match bias {
            Some(b) => s.iter().zip(b).map(|(&v, &b)| v + b).collect(),
            None => s.clone(),
        };
        if self.n_group > 1 {
            let size = c.len() / self.n_group;
            let group_score: Vec<f32> = c
                .chunks(size)
                .map(|g| top_indices(g, 2).iter().map(|&i| g[i]).sum())
                .collect();
            let keep = top_indices(&group_score, self.topk_group);
            for (g, chunk) in c.chunks_mut(size).enumerate() {
                if !keep.contains(&g) {
                    chunk.fill(f32::NEG_INFINITY);
                }
            }
        }
        let mut w: Vec<(usize, f32)> = top_indices(&c, self.top_k)
            .into_iter()
            .map(|i| (i, s[i]))
            .collect();
        if self.norm_topk_prob {
            let t: f32 = w.iter().map(|p| p.1).sum::<f32>() + 1e-20;
            w.iter_mut().for_each(|p| p.1 /= t);
        }
        w.iter_mut().for_each(|p| p.1 *= self.routed_scaling_factor);
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
    /// V3's `e_score_correction_bias` (selection only).
    bias: Option<Vec<f32>>,
    /// Empty when loaded without them ([`Moe::load_without_experts`]).
    experts: Vec<Mlp>,
    shared: Option<Mlp>,
    router: Router,
    n_experts: usize,
}

/// For each routed expert, the tokens it serves and their routing weights.
pub(crate) type Assignment = Vec<Vec<(usize, f32)>>;

impl Moe {
    pub(crate) fn load(ld: &Loader<'_>, c: &Config, i: usize) -> Result<Self, ModelError> {
        let mut moe = Self::load_without_experts(ld, c, i)?;
        let (p, h, e, ie) = Self::dims(c, i);
        let fused = format!("{p}.experts.gate_up_proj");
        moe.experts = if ld.src.contains(&fused) {
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
                .map(|j| Self::load_expert(ld, c, i, j))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(moe)
    }

    /// `(tensor prefix, hidden, routed experts, expert width)` of layer `i`.
    fn dims(c: &Config, i: usize) -> (String, usize, usize, usize) {
        (
            format!("model.layers.{i}.mlp"),
            c.hidden_size,
            c.n_routed_experts.unwrap_or(0),
            c.moe_intermediate_size,
        )
    }

    /// The router and the shared experts only: routed experts are loaded one at a time with
    /// [`Moe::load_expert`] and run with [`Moe::run_expert`].
    pub(crate) fn load_without_experts(
        ld: &Loader<'_>,
        c: &Config,
        i: usize,
    ) -> Result<Self, ModelError> {
        let (p, h, e, ie) = Self::dims(c, i);
        let gate = ld.matrix(&format!("{p}.gate.weight"), e, h)?;
        let bias = match c.topk_method {
            // Stored F32 in released checkpoints; any float dtype is widened.
            TopkMethod::NoauxTc => {
                Some(ld.vector(&format!("{p}.gate.e_score_correction_bias"), e)?)
            }
            TopkMethod::Greedy | TopkMethod::GroupLimitedGreedy => None,
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
            bias,
            experts: Vec::new(),
            shared,
            router: Router::from_config(c),
            n_experts: e,
        })
    }

    /// Routed expert `j` of layer `i` alone (of a fused 3-D tensor, only its matrices).
    pub(crate) fn load_expert(
        ld: &Loader<'_>,
        c: &Config,
        i: usize,
        j: usize,
    ) -> Result<Mlp, ModelError> {
        let (p, h, e, ie) = Self::dims(c, i);
        let fused = format!("{p}.experts.gate_up_proj");
        if !ld.src.contains(&fused) {
            return Mlp::load(ld, &format!("{p}.experts.{j}"), ie, h);
        }
        let gu = ld.stacked_one(&fused, j, e, 2 * ie, h)?;
        let down = ld.stacked_one(&format!("{p}.experts.down_proj"), j, e, h, ie)?;
        Ok(Mlp {
            gate_up: GateUp::Fused(gu),
            down,
            width: ie,
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

    /// `[n, hidden] -> [n, hidden]`: each expert runs once on all the tokens routed to it;
    /// `tap` sees each expert's tokens (with their routing weights) and the down_proj inputs of
    /// the experts and the shared experts.
    pub(crate) fn forward_tapped(
        &self,
        x: &[f32],
        n: usize,
        mode: Mode,
        tap: Option<TapAt<'_>>,
    ) -> Result<Vec<f32>, ModelError> {
        let h = x.len() / n.max(1);
        let assigned = self.assign(x, n, mode)?;
        let work = n * self.router.top_k * 3 * h * self.experts.first().map_or(0, |m| m.width);
        let outputs = crate::map_range(self.experts.len(), work, |j| {
            Self::run_expert(&self.experts[j], j, x, &assigned[j], mode, tap)
        })?;
        let mut y = vec![0.0f32; n * h];
        for (toks, out) in assigned.iter().zip(&outputs) {
            if let Some(out) = out {
                add_weighted(&mut y, toks, out);
            }
        }
        self.add_shared(&mut y, x, n, mode, tap)?;
        Ok(y)
    }

    /// The router's choice for every token of `x` (`[n, hidden]`).
    pub(crate) fn assign(&self, x: &[f32], n: usize, mode: Mode) -> Result<Assignment, ModelError> {
        let logits = self.gate.apply(x, n, mode)?;
        let e = self.n_experts;
        let mut assigned: Assignment = vec![Vec::new(); e];
        for (t, l) in logits.chunks_exact(e).enumerate() {
            for (j, w) in self.router.route(l, self.bias.as_deref()) {
                assigned[j].push((t, w));
            }
        }
        Ok(assigned)
    }

    /// Expert `j` over its tokens `toks` of `x` (`[toks, hidden]` out; `None` without tokens),
    /// showing `tap` its inputs.
    pub(crate) fn run_expert(
        expert: &Mlp,
        j: usize,
        x: &[f32],
        toks: &[(usize, f32)],
        mode: Mode,
        tap: Option<TapAt<'_>>,
    ) -> Result<Option<Vec<f32>>, ModelError> {
        if toks.is_empty() {
            return Ok(None);
        }
        let h = expert.down.rows();
        let xs: Vec<f32> = toks
            .iter()
            .flat_map(|&(t, _)| x[t * h..(t + 1) * h].iter().copied())
            .collect();
        let Some(t) = tap else {
            return expert.forward(&xs, toks.len(), mode).map(Some);
        };
        let weights: Vec<f32> = toks.iter().map(|p| p.1).collect();
        t.record(Site::ExpertInput(j), &xs, toks.len(), Some(&weights));
        let act = Some(t.at(Site::ExpertAct(j), Some(&weights)));
        expert.forward_tapped(&xs, toks.len(), mode, act).map(Some)
    }

    /// `y += shared(x)`, after the routed experts' contributions (their order of addition).
    pub(crate) fn add_shared(
        &self,
        y: &mut [f32],
        x: &[f32],
        n: usize,
        mode: Mode,
        tap: Option<TapAt<'_>>,
    ) -> Result<(), ModelError> {
        if let Some(s) = &self.shared {
            let sy = s.forward_tapped(x, n, mode, tap.map(|t| t.at(Site::SharedAct, None)))?;
            y.iter_mut().zip(&sy).for_each(|(a, &b)| *a += b);
        }
        Ok(())
    }
}

/// `y[t] += w * out[k]` for the k-th routed token `(t, w)`.
pub(crate) fn add_weighted(y: &mut [f32], toks: &[(usize, f32)], out: &[f32]) {
    let h = out.len() / toks.len().max(1);
    for (&(t, w), o) in toks.iter().zip(out.chunks_exact(h)) {
        y[t * h..(t + 1) * h]
            .iter_mut()
            .zip(o)
            .for_each(|(a, &b)| *a += w * b);
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
        let r = router(TopkMethod::Greedy, 3, false, 2.5).route(&l, None);
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
        let r = router(TopkMethod::GroupLimitedGreedy, 3, false, 1.0).route(&l, None);
        let idx: Vec<usize> = r.iter().map(|x| x.0).collect();
        assert_eq!(idx, [1, 5, 4]);
    }

    #[test]
    fn norm_topk_prob_renormalises_without_scaling() {
        let l = [0.1, 2.0, -1.0, 1.5, 0.3, 1.9, 0.0, -2.0];
        let r = router(TopkMethod::Greedy, 2, true, 16.0).route(&l, None);
        let s: f32 = r.iter().map(|x| x.1).sum();
        assert!((s - 1.0).abs() < 1e-6);
        let p = softmax(&l);
        assert!((r[0].1 - p[1] / (p[1] + p[5])).abs() < 1e-6);
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    const V3_LOGITS: [f32; 8] = [0.1, 2.0, -1.0, 1.5, 0.3, 1.9, 0.0, -2.0];
    const V3_BIAS: [f32; 8] = [0.0, -0.9, 0.9, 0.2, 0.1, -0.3, 0.4, 0.05];

    fn sorted(mut r: Vec<(usize, f32)>) -> Vec<(usize, f32)> {
        r.sort_by_key(|p| p.0);
        r
    }

    #[test]
    fn noaux_tc_groups_by_top2_sum_selects_with_bias_weighs_without() {
        // s = sigmoid(l) = [.525 .881 .269 .818 .574 .870 .500 .119];
        // c = s + b     = [.525 -.019 1.169 1.018 .674 .570 .900 .169].
        // Group sums of the two best c: [.506 2.186 1.244 1.069] -> groups 1 and 2 (by their
        // maximum it would be groups 1 and 3). Expert 1 has the best s but its bias drops it;
        // expert 6 (c .900) is in a masked group. Top 3 of c: experts 2, 3, 4.
        let r = router(TopkMethod::NoauxTc, 3, true, 2.5).route(&V3_LOGITS, Some(&V3_BIAS));
        let r = sorted(r);
        assert_eq!(r.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3, 4]);
        let s: Vec<f32> = [2, 3, 4].iter().map(|&i| sigmoid(V3_LOGITS[i])).collect();
        let total: f32 = s.iter().sum::<f32>() + 1e-20;
        for (p, v) in r.iter().zip(&s) {
            assert!((p.1 - 2.5 * v / total).abs() < 1e-6, "{r:?}");
        }
        // transformers' values for these inputs.
        let want = [0.4048, 1.2306, 0.8646];
        for (p, w) in r.iter().zip(want) {
            assert!((p.1 - w).abs() < 1e-4, "{r:?}");
        }
    }

    #[test]
    fn noaux_tc_always_scales_and_normalises_only_when_asked() {
        let r =
            sorted(router(TopkMethod::NoauxTc, 3, false, 2.5).route(&V3_LOGITS, Some(&V3_BIAS)));
        for (i, w) in r {
            assert!((w - 2.5 * sigmoid(V3_LOGITS[i])).abs() < 1e-6);
        }
    }

    #[test]
    fn noaux_tc_with_one_group_is_a_global_top_k_of_biased_scores() {
        let mut r = router(TopkMethod::NoauxTc, 3, true, 1.0);
        r.n_group = 1;
        r.topk_group = 1;
        // Biased: experts 2 (1.169), 3 (1.018), 6 (0.900); unbiased it would be 1, 5, 3.
        let got = sorted(r.route(&V3_LOGITS, Some(&V3_BIAS)));
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3, 6]);
        let sum: f32 = got.iter().map(|p| p.1).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        let got = sorted(r.route(&V3_LOGITS, None));
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 3, 5]);
    }
}
