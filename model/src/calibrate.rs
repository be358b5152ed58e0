//! Activation capture for calibration-aware quantization: runs the float model over calibration
//! tokens (prefill, in windows like the evaluation) and sums, for every linear layer, the second
//! moment `H = sum x x^T` of the inputs it really receives:
//!
//! - q_proj / q_a_proj / kv_a_proj_with_mqa: the normalised hidden state;
//! - q_b_proj: the normalised query latent; kv_b_proj: the normalised KV latent `c` of each new
//!   token (what both attention paths multiply by it);
//! - o_proj: the attention output (all heads);
//! - gate/up of the dense MLP and the shared experts, and the router: the normalised hidden
//!   state; their down_proj: `silu(gate) * up`;
//! - a routed expert: only the tokens routed to it (gate/up: their hidden states, down_proj:
//!   its own `silu(gate) * up`), each weighted by its routing weight squared
//!   ([`RouterWeighting::Routed`]): the expert's output enters the layer's output multiplied by
//!   that weight, so its squared error does too.
//!
//! The result is a `tquant_convert::calibration::Calibration` keyed by checkpoint tensor names.

use crate::config::Config;
use crate::kernels;
use crate::layerwise::{LayerwiseRun, Stage};
use crate::model::{Logits, Model};
pub use crate::observe::{Site, Tap};
use crate::weights::TensorSource;
use crate::ModelError;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use tquant_convert::calibration::{Calibration, Hessian};

/// How the tokens of a routed expert count in its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterWeighting {
    /// Each token by its routing weight squared: the expert's share of the layer's output error.
    #[default]
    Routed,
    /// Every routed token alike.
    Uniform,
}

impl std::str::FromStr for RouterWeighting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "routed" => Ok(Self::Routed),
            "uniform" => Ok(Self::Uniform),
            _ => Err(format!("unknown router weighting '{s}' (routed, uniform)")),
        }
    }
}

/// A running `sum w x x^T` of one site.
#[derive(Debug, Clone)]
struct Moment {
    dim: usize,
    tokens: u64,
    sum: Vec<f64>,
}

/// The running sums by (layer, site); each behind its own lock so experts add in parallel.
type Sites = HashMap<(usize, Site), Arc<Mutex<Moment>>>;

/// A [`Tap`] that sums the second moment of every site it sees.
#[derive(Debug, Default)]
pub struct SecondMoments {
    weighting: RouterWeighting,
    sites: Mutex<Sites>,
}

impl SecondMoments {
    /// Empty sums; routed experts' tokens count as `weighting` says.
    pub fn new(weighting: RouterWeighting) -> Self {
        Self {
            weighting,
            sites: Mutex::new(HashMap::new()),
        }
    }

    /// `(tokens, sum w x x^T)` of a site, if it was seen.
    pub fn get(&self, layer: usize, site: Site) -> Option<(u64, Vec<f64>)> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let m = sites.get(&(layer, site))?;
        let m = m.lock().unwrap_or_else(|p| p.into_inner());
        Some((m.tokens, m.sum.clone()))
    }

    /// Every site seen, in order.
    pub fn sites(&self) -> Vec<(usize, Site)> {
        let sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = sites.keys().copied().collect();
        v.sort();
        v
    }

    /// Every site's `(tokens, sum)`, moved out (no copy of the sums).
    fn into_sums(self) -> HashMap<(usize, Site), (u64, Vec<f64>)> {
        let sites = self.sites.into_inner().unwrap_or_else(|p| p.into_inner());
        sites
            .into_iter()
            .map(|(k, m)| {
                let m = match Arc::try_unwrap(m) {
                    Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
                    Err(shared) => shared.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                };
                (k, (m.tokens, m.sum))
            })
            .collect()
    }

    fn slot(&self, layer: usize, site: Site, dim: usize) -> Arc<Mutex<Moment>> {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        sites
            .entry((layer, site))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Moment {
                    dim,
                    tokens: 0,
                    sum: vec![0.0; dim * dim],
                }))
            })
            .clone()
    }
}

impl Tap for SecondMoments {
    fn record(&self, layer: usize, site: Site, x: &[f32], n: usize, weights: Option<&[f32]>) {
        if n == 0 {
            return;
        }
        let dim = x.len() / n;
        // X^T X (rows scaled by their weight) as one f32 product of X^T with itself: at most a
        // window of tokens per call, then summed in f64.
        let mut xt = vec![0.0f32; dim * n];
        for t in 0..n {
            let s = match (self.weighting, weights) {
                (RouterWeighting::Routed, Some(w)) => w[t],
                _ => 1.0,
            };
            for (c, &v) in x[t * dim..(t + 1) * dim].iter().enumerate() {
                xt[c * n + t] = s * v;
            }
        }
        let mut g = vec![0.0f32; dim * dim];
        if kernels::matmul_f32(&xt, dim, n, &xt, dim, &mut g).is_err() {
            // Sizes are consistent by construction; a failure would leave the sum unchanged.
            return;
        }
        let slot = self.slot(layer, site, dim);
        let mut m = slot.lock().unwrap_or_else(|p| p.into_inner());
        if m.dim != dim {
            return;
        }
        m.tokens += n as u64;
        // Symmetric by construction; the kernel's summation order may differ in the last bit.
        for i in 0..dim {
            m.sum[i * dim + i] += g[i * dim + i] as f64;
            for j in 0..i {
                let v = 0.5 * (g[i * dim + j] as f64 + g[j * dim + i] as f64);
                m.sum[i * dim + j] += v;
                m.sum[j * dim + i] += v;
            }
        }
    }
}

/// How the calibration text is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Tokens per chunk; each chunk runs from an empty cache (as the evaluation's windows).
    pub window: usize,
    /// How routed experts' tokens count.
    pub weighting: RouterWeighting,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            window: 256,
            weighting: RouterWeighting::Routed,
        }
    }
}

/// Runs `tokens` through `model` in chunks of `opts.window` (a shorter last chunk included),
/// in parallel on the model's threads, and returns every site's second moment.
pub fn capture(
    model: &Model,
    tokens: &[u32],
    opts: &CaptureOptions,
) -> Result<SecondMoments, ModelError> {
    if opts.window == 0 {
        return Err(ModelError::EmptyCalibrationWindow);
    }
    if tokens.is_empty() {
        return Err(ModelError::NoCalibrationTokens);
    }
    let moments = SecondMoments::new(opts.weighting);
    model.install(|| {
        tokens.par_chunks(opts.window).try_for_each(|chunk| {
            let mut cache = model.new_cache();
            model
                .forward_observed(chunk, &mut cache, Logits::Last, &moments)
                .map(|_| ())
        })
    })?;
    Ok(moments)
}

/// Checkpoint tensors whose input is `site` of layer `layer`: `(name, expert index)`, the index
/// for fused 3-D expert tensors. Both spellings of experts are listed; [`to_calibration`] keeps
/// the ones a checkpoint has.
pub fn site_tensors(layer: usize, site: Site) -> Vec<(String, Option<usize>)> {
    let a = format!("model.layers.{layer}.self_attn");
    let m = format!("model.layers.{layer}.mlp");
    let names = |v: &[String]| v.iter().map(|n| (n.clone(), None)).collect::<Vec<_>>();
    match site {
        Site::AttnInput => names(&[
            format!("{a}.q_proj.weight"),
            format!("{a}.q_a_proj.weight"),
            format!("{a}.kv_a_proj_with_mqa.weight"),
        ]),
        Site::QLatent => names(&[format!("{a}.q_b_proj.weight")]),
        Site::KvLatent => names(&[format!("{a}.kv_b_proj.weight")]),
        Site::AttnOutput => names(&[format!("{a}.o_proj.weight")]),
        Site::FfnInput => names(&[
            format!("{m}.gate_proj.weight"),
            format!("{m}.up_proj.weight"),
            format!("{m}.gate.weight"),
            format!("{m}.shared_experts.gate_proj.weight"),
            format!("{m}.shared_experts.up_proj.weight"),
        ]),
        Site::MlpAct => names(&[format!("{m}.down_proj.weight")]),
        Site::SharedAct => names(&[format!("{m}.shared_experts.down_proj.weight")]),
        Site::ExpertInput(j) => {
            let mut v = names(&[
                format!("{m}.experts.{j}.gate_proj.weight"),
                format!("{m}.experts.{j}.up_proj.weight"),
            ]);
            v.push((format!("{m}.experts.gate_up_proj"), Some(j)));
            v
        }
        Site::ExpertAct(j) => {
            let mut v = names(&[format!("{m}.experts.{j}.down_proj.weight")]);
            v.push((format!("{m}.experts.down_proj"), Some(j)));
            v
        }
    }
}

/// The sites of a model: every attention and feed-forward input, and every routed expert's
/// (an expert no token reached still gets a record, with zero tokens).
pub fn model_sites(config: &Config) -> Vec<(usize, Site, usize)> {
    (0..config.num_hidden_layers)
        .flat_map(|l| layer_sites(config, l))
        .collect()
}

/// The sites of decoder layer `l`: `(l, site, input width)`.
pub fn layer_sites(config: &Config, l: usize) -> Vec<(usize, Site, usize)> {
    let c = config;
    let h = c.hidden_size;
    let mut v = vec![(l, Site::AttnInput, h)];
    if let Some(r) = c.q_lora_rank {
        v.push((l, Site::QLatent, r));
    }
    v.push((l, Site::KvLatent, c.kv_lora_rank));
    v.push((l, Site::AttnOutput, c.num_attention_heads * c.v_head_dim));
    v.push((l, Site::FfnInput, h));
    if c.is_moe_layer(l) {
        if c.n_shared_experts > 0 {
            v.push((
                l,
                Site::SharedAct,
                c.moe_intermediate_size * c.n_shared_experts,
            ));
        }
        for j in 0..c.n_routed_experts.unwrap_or(0) {
            v.push((l, Site::ExpertInput(j), h));
            v.push((l, Site::ExpertAct(j), c.moe_intermediate_size));
        }
    } else {
        v.push((l, Site::MlpAct, c.intermediate_size));
    }
    v
}

/// Runs the next stage of `run` over its chunks and returns it with its second moments
/// (calibration a stage at a time: [`stage_calibration`]).
pub fn capture_next_stage<S: TensorSource>(
    run: &mut LayerwiseRun<S>,
    weighting: RouterWeighting,
) -> Result<(Stage, SecondMoments), ModelError> {
    let moments = SecondMoments::new(weighting);
    let stage = run.next_stage(&moments)?;
    Ok((stage, moments))
}

/// The sites `stage` shows: `(layer, site, input width)`.
pub fn stage_sites(config: &Config, stage: Stage) -> Vec<(usize, Site, usize)> {
    layer_sites(config, stage.layer())
        .into_iter()
        .filter(|&(l, site, _)| stage.covers(l, site))
        .collect()
}

/// Bytes of the second moments `stage` collects: an f64 `d x d` matrix per input site.
pub fn stage_statistics_bytes(config: &Config, stage: Stage) -> u64 {
    stage_sites(config, stage)
        .iter()
        .map(|&(_, _, d)| d as u64 * d as u64 * 8)
        .sum()
}

/// The stage of `config` with the most statistics, and their bytes
/// ([`stage_statistics_bytes`]); `None` without decoder layers.
pub fn largest_stage(config: &Config) -> Option<(Stage, u64)> {
    // A layer's routed experts all have the same widths: its first stands for them.
    Stage::all(config)
        .into_iter()
        .filter(|s| !matches!(s, Stage::Expert(_, j) if *j > 0))
        .map(|s| (s, stage_statistics_bytes(config, s)))
        .max_by_key(|&(s, bytes)| (bytes, std::cmp::Reverse(s)))
}

/// The decoder layer a checkpoint tensor belongs to (`model.layers.{i}.`), if any.
pub fn tensor_layer(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("model.layers.")?;
    rest.split('.').next()?.parse().ok()
}

/// Turns the captured moments of `layers` into a [`Calibration`] keyed by the tensor names `has`
/// accepts (the checkpoint's), added to `outline` (settings, source and token count). Sites never
/// reached get zero statistics, so their tensors are recorded as seen by no token (and fall back
/// to plain rounding).
pub fn to_calibration(
    moments: SecondMoments,
    config: &Config,
    has: &dyn Fn(&str) -> bool,
    outline: Calibration,
    layers: Range<usize>,
) -> Result<Calibration, ModelError> {
    let sites = layers.flat_map(|l| layer_sites(config, l)).collect();
    to_calibration_of(moments, has, outline, sites)
}

/// [`to_calibration`] of one [`Stage`]'s sites (of the moments [`capture_next_stage`] gave).
pub fn stage_calibration(
    moments: SecondMoments,
    config: &Config,
    has: &dyn Fn(&str) -> bool,
    outline: Calibration,
    stage: Stage,
) -> Result<Calibration, ModelError> {
    to_calibration_of(moments, has, outline, stage_sites(config, stage))
}

/// [`to_calibration`] of `sites` (`(layer, site, input width)`).
fn to_calibration_of(
    moments: SecondMoments,
    has: &dyn Fn(&str) -> bool,
    outline: Calibration,
    sites: Vec<(usize, Site, usize)>,
) -> Result<Calibration, ModelError> {
    let mut cal = outline;
    let mut sums = moments.into_sums();
    for (layer, site, dim) in sites {
        let (n, sum) = sums
            .remove(&(layer, site))
            .unwrap_or_else(|| (0, vec![0.0; dim * dim]));
        let h = Arc::new(
            Hessian::new(dim, n, sum).map_err(|e| ModelError::Statistics {
                layer,
                site,
                source: Box::new(e),
            })?,
        );
        for (name, expert) in site_tensors(layer, site) {
            if has(&name) {
                cal.insert(&name, expert, h.clone());
            }
        }
    }
    Ok(cal)
}
