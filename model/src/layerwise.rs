//! Calibration's run of the float model in stages smaller than a decoder layer: a layer's
//! attention (and router), then a dense layer's MLP, or a MoE layer's routed experts one at a
//! time and then its shared experts. Memory holds one stage's weights (one expert's, for a
//! routed expert) and every chunk's hidden state.

use crate::attention::Dims;
use crate::config::Config;
use crate::model::{build_pool, embed_rows, Ffn, Layer, Options};
use crate::moe::{add_weighted, Assignment, Moe};
use crate::observe::{Site, Tap, TapAt};
use crate::weights::{Loader, TensorData, TensorSource};
use crate::ModelError;
use rayon::prelude::*;

/// One step of a [`LayerwiseRun`]: what it runs, and so which sites' inputs it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Decoder layer `i`'s attention (and a MoE layer's routing): the attention's sites and
    /// the feed-forward input (of a dense MLP's gate and up, or the router's and the shared
    /// experts' gate and up).
    Attention(usize),
    /// Dense layer `i`'s MLP: its down_proj's input; completes the layer.
    Mlp(usize),
    /// Routed expert `j` of MoE layer `i` on its tokens of every chunk: its input and its
    /// down_proj's input.
    Expert(usize, usize),
    /// The shared experts of MoE layer `i` (their down_proj's input); completes the layer.
    /// They run after the routed experts, as in the whole forward pass, so that their output
    /// is never held beside the routed experts' sum.
    Shared(usize),
}

impl Stage {
    /// The decoder layer this stage belongs to.
    pub fn layer(&self) -> usize {
        match *self {
            Stage::Attention(i) | Stage::Mlp(i) | Stage::Expert(i, _) | Stage::Shared(i) => i,
        }
    }

    /// Every stage of `config`'s decoder layers, in the order they run.
    pub fn all(config: &Config) -> Vec<Stage> {
        let mut v = Vec::new();
        for i in 0..config.num_hidden_layers {
            v.push(Stage::Attention(i));
            if config.is_moe_layer(i) {
                v.extend((0..config.n_routed_experts.unwrap_or(0)).map(|j| Stage::Expert(i, j)));
                v.push(Stage::Shared(i));
            } else {
                v.push(Stage::Mlp(i));
            }
        }
        v
    }

    /// Whether this stage shows `site` of decoder layer `layer`.
    pub fn covers(&self, layer: usize, site: Site) -> bool {
        if layer != self.layer() {
            return false;
        }
        match *self {
            Stage::Attention(_) => matches!(
                site,
                Site::AttnInput
                    | Site::QLatent
                    | Site::KvLatent
                    | Site::AttnOutput
                    | Site::FfnInput
            ),
            Stage::Mlp(_) => site == Site::MlpAct,
            Stage::Expert(_, j) => site == Site::ExpertInput(j) || site == Site::ExpertAct(j),
            Stage::Shared(_) => site == Site::SharedAct,
        }
    }
}

/// How many `tokens x hidden` f32 arrays a [`LayerwiseRun`] of `config` holds at most: the
/// hidden state and the feed-forward input, and through a MoE layer the routed experts' sum.
pub fn hidden_arrays(config: &Config) -> u64 {
    let moe = (0..config.num_hidden_layers).any(|l| config.is_moe_layer(l));
    if moe {
        3
    } else {
        2
    }
}

/// The model run in [`Stage`]s over fixed chunks of tokens, each chunk from an empty cache
/// (calibration): only the current stage's weights and every chunk's hidden state are held,
/// whatever the model's size (`tokens x hidden` f32, and within a layer, after its attention,
/// the feed-forward input and in a MoE layer the routed experts' sum: [`hidden_arrays`]). A
/// routed expert is read (and widened to f32) alone, runs on the tokens of every chunk routed
/// to it, and is dropped before the next is read.
pub struct LayerwiseRun<S: TensorSource> {
    config: Config,
    dims: Dims,
    src: S,
    opts: Options,
    pool: rayon::ThreadPool,
    /// Each chunk's hidden state after the stages run so far, `[n, hidden]`.
    chunks: Vec<Vec<f32>>,
    stages: Vec<Stage>,
    /// Index in `stages` of the next stage.
    next: usize,
    /// The layer under way, between its attention and its last stage.
    ffn: Option<FfnLayer>,
}

/// A layer between its attention and its last stage: its feed-forward block (a MoE block
/// without its routed experts), and each chunk's state (in the order of the run's chunks).
struct FfnLayer {
    ffn: Ffn,
    chunks: Vec<FfnChunk>,
}

/// A chunk between a layer's attention and its last stage.
struct FfnChunk {
    /// The feed-forward block's normalised input, `[n, hidden]`.
    normed: Vec<f32>,
    /// A MoE block's routing (empty for a dense MLP).
    assigned: Assignment,
    /// The routed experts' sum so far (empty for a dense MLP).
    y: Vec<f32>,
}

impl<S: TensorSource> std::fmt::Debug for LayerwiseRun<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerwiseRun")
            .field("chunks", &self.chunks.len())
            .field("next", &self.stages.get(self.next))
            .finish_non_exhaustive()
    }
}

impl<S: TensorSource> LayerwiseRun<S> {
    /// Embeds `tokens` in chunks of `window` (a shorter last chunk included).
    pub fn new(
        config: Config,
        src: S,
        opts: Options,
        tokens: &[u32],
        window: usize,
    ) -> Result<Self, ModelError> {
        if window == 0 {
            return Err(ModelError::EmptyWindow);
        }
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let embed = Loader {
            src: &Widened(&src),
        }
        .matrix("model.embed_tokens.weight", vocab, h)?;
        let chunks = tokens
            .chunks(window)
            .map(|chunk| embed_rows(&embed, chunk, h, vocab))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            dims: Dims::new(&config),
            pool: build_pool(opts.threads)?,
            stages: Stage::all(&config),
            config,
            src,
            opts,
            chunks,
            next: 0,
            ffn: None,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The source the layers are loaded from.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// Every stage, in the order [`LayerwiseRun::next_stage`] runs them.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The index (in [`LayerwiseRun::stages`]) of the stage run next.
    pub fn next_index(&self) -> usize {
        self.next
    }

    /// Runs the next stage over every chunk (in parallel), showing `tap` the inputs of its
    /// linear layers; returns it.
    pub fn next_stage(&mut self, tap: &dyn Tap) -> Result<Stage, ModelError> {
        let Some(&stage) = self.stages.get(self.next) else {
            return Err(ModelError::StagesDone {
                stages: self.stages.len(),
            });
        };
        let tap = TapAt {
            tap,
            layer: stage.layer(),
        };
        match stage {
            Stage::Attention(i) => self.attention(i, tap),
            Stage::Mlp(i) => self.mlp(i, tap),
            Stage::Expert(i, j) => self.expert(i, j, tap),
            Stage::Shared(i) => self.shared(i, tap),
        }?;
        self.next += 1;
        Ok(stage)
    }

    /// Attention (and a MoE block's routing) of every chunk; the layer's feed-forward block
    /// (a MoE block's router and shared experts) is kept for the stages that follow, its
    /// attention dropped.
    fn attention(&mut self, i: usize, tap: TapAt<'_>) -> Result<(), ModelError> {
        let layer = Layer::load_with(
            &Loader {
                src: &Widened(&self.src),
            },
            &self.config,
            i,
            false,
        )?;
        let (c, dims, opts) = (&self.config, &self.dims, &self.opts);
        let (h, chunks) = (c.hidden_size, &mut self.chunks);
        let states = self.pool.install(|| {
            chunks
                .par_iter_mut()
                .map(|x| {
                    let n = x.len() / h;
                    let mut normed = vec![0.0f32; x.len()];
                    let mut kv = Vec::new();
                    layer.attend(c, dims, opts, x, &mut normed, n, &mut kv, Some(tap))?;
                    let (assigned, y) = match &layer.ffn {
                        Ffn::Moe(moe) => (moe.assign(&normed, n, opts.mode)?, vec![0.0; x.len()]),
                        Ffn::Dense(_) => (Vec::new(), Vec::new()),
                    };
                    Ok(FfnChunk {
                        normed,
                        assigned,
                        y,
                    })
                })
                .collect::<Result<Vec<_>, ModelError>>()
        })?;
        self.ffn = Some(FfnLayer {
            ffn: layer.ffn,
            chunks: states,
        });
        Ok(())
    }

    /// A dense layer's MLP over every chunk, `x += mlp(normed)`; the layer's state is dropped.
    fn mlp(&mut self, i: usize, tap: TapAt<'_>) -> Result<(), ModelError> {
        let state = self.ffn.take().ok_or_else(|| not_begun(i))?;
        let Ffn::Dense(mlp) = &state.ffn else {
            return Err(ModelError::LayerKind {
                layer: i,
                kind: "dense",
            });
        };
        let (mode, h) = (self.opts.mode, self.config.hidden_size);
        let chunks = &mut self.chunks;
        self.pool.install(|| {
            chunks
                .par_iter_mut()
                .zip(state.chunks.par_iter())
                .try_for_each(|(x, s)| {
                    let n = x.len() / h;
                    let act = Some(tap.at(Site::MlpAct, None));
                    let f = mlp.forward_tapped(&s.normed, n, mode, act)?;
                    x.iter_mut().zip(&f).for_each(|(v, d)| *v += d);
                    Ok(())
                })
        })
    }

    /// Routed expert `j` read alone, run on its tokens of every chunk, added to their sums
    /// expert by expert (the order of [`Moe::forward_tapped`]), and dropped.
    fn expert(&mut self, i: usize, j: usize, tap: TapAt<'_>) -> Result<(), ModelError> {
        let expert = Moe::load_expert(
            &Loader {
                src: &Widened(&self.src),
            },
            &self.config,
            i,
            j,
        )?;
        let mode = self.opts.mode;
        let pool = &self.pool;
        let state = self.ffn.as_mut().ok_or_else(|| not_begun(i))?;
        pool.install(|| {
            state.chunks.par_iter_mut().try_for_each(|s| {
                let toks = &s.assigned[j];
                if let Some(out) = Moe::run_expert(&expert, j, &s.normed, toks, mode, Some(tap))? {
                    add_weighted(&mut s.y, toks, &out);
                }
                Ok(())
            })
        })
    }

    /// The shared experts after the routed ones (`y += shared`), then `x += y`; the layer's
    /// state is dropped.
    fn shared(&mut self, i: usize, tap: TapAt<'_>) -> Result<(), ModelError> {
        let state = self.ffn.take().ok_or_else(|| not_begun(i))?;
        let Ffn::Moe(moe) = &state.ffn else {
            return Err(ModelError::LayerKind {
                layer: i,
                kind: "MoE",
            });
        };
        let (mode, h) = (self.opts.mode, self.config.hidden_size);
        let chunks = &mut self.chunks;
        self.pool.install(|| {
            chunks
                .par_iter_mut()
                .zip(state.chunks.into_par_iter())
                .try_for_each(|(x, mut s)| {
                    let n = x.len() / h;
                    moe.add_shared(&mut s.y, &s.normed, n, mode, Some(tap))?;
                    x.iter_mut().zip(&s.y).for_each(|(v, d)| *v += d);
                    Ok(())
                })
        })
    }
}

fn not_begun(i: usize) -> ModelError {
    ModelError::StageBeforeAttention { layer: i }
}

/// `S` with every matrix read widened to f32 (the default [`TensorSource::stored`]), never
/// borrowed at its stored width from the checkpoint's long-lived map: a stage's weights are
/// dropped with the stage and leave no file pages resident behind them.
struct Widened<'a, S>(&'a S);

impl<S: TensorSource> TensorSource for Widened<'_, S> {
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensor(&self, name: &str) -> Result<TensorData, ModelError> {
        self.0.tensor(name)
    }
    fn part(&self, name: &str, index: usize) -> Option<Result<TensorData, ModelError>> {
        self.0.part(name, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::model_sites;

    /// Every site of the model is shown by exactly one stage, and a routed expert's stage shows
    /// that expert's two sites only.
    #[test]
    fn stages_partition_the_sites() {
        // 3 layers, the first dense; 8 routed experts and shared ones.
        let text = include_str!("../../tests/data/model/lite/config.json");
        let c = Config::from_json(text, "lite").unwrap();
        let stages = Stage::all(&c);
        let experts = c.n_routed_experts.unwrap();
        let moe_layers = (0..3).filter(|&l| c.is_moe_layer(l)).count();
        assert!(moe_layers > 0 && moe_layers < 3, "both kinds of layer");
        assert_eq!(
            stages.len(),
            2 * (3 - moe_layers) + moe_layers * (experts + 2)
        );
        for (l, site, _) in model_sites(&c) {
            let n = stages.iter().filter(|s| s.covers(l, site)).count();
            assert_eq!(n, 1, "layer {l} {site:?}");
        }
        let i = (0..3).find(|&l| c.is_moe_layer(l)).unwrap();
        let shown: Vec<Site> = model_sites(&c)
            .into_iter()
            .filter(|&(l, site, _)| Stage::Expert(i, 1).covers(l, site))
            .map(|(_, site, _)| site)
            .collect();
        assert_eq!(shown, [Site::ExpertInput(1), Site::ExpertAct(1)]);
        // Layers run in order, each MoE layer's routed experts between its attention and its
        // shared experts.
        let layers: Vec<usize> = stages.iter().map(Stage::layer).collect();
        assert!(layers.windows(2).all(|w| w[0] <= w[1]));
        let at = |s: Stage| stages.iter().position(|&t| t == s).unwrap();
        assert!(at(Stage::Attention(i)) < at(Stage::Expert(i, 0)));
        assert!(at(Stage::Expert(i, experts - 1)) < at(Stage::Shared(i)));
    }

    /// A routed expert's stage holds its two second moments; the largest stage is found among
    /// all of them.
    #[test]
    fn stage_statistics_are_counted_per_stage() {
        use crate::calibrate::{largest_stage, stage_statistics_bytes};
        let text = include_str!("../../tests/data/model/lite/config.json");
        let c = Config::from_json(text, "lite").unwrap();
        let (h, ie) = (c.hidden_size as u64, c.moe_intermediate_size as u64);
        assert_eq!(
            stage_statistics_bytes(&c, Stage::Expert(1, 5)),
            (h * h + ie * ie) * 8
        );
        let (largest, bytes) = largest_stage(&c).unwrap();
        assert_eq!(stage_statistics_bytes(&c, largest), bytes);
        for s in Stage::all(&c) {
            assert!(stage_statistics_bytes(&c, s) <= bytes, "{s:?}");
        }
        let layer_one: u64 = Stage::all(&c)
            .into_iter()
            .filter(|s| s.layer() == 1)
            .map(|s| stage_statistics_bytes(&c, s))
            .sum();
        let sites: u64 = model_sites(&c)
            .iter()
            .filter(|site| site.0 == 1)
            .map(|&(_, _, d)| d as u64 * d as u64 * 8)
            .sum();
        assert_eq!(layer_one, sites);
        assert_eq!(hidden_arrays(&c), 3);
    }
}
