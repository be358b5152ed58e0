//! Calibration's run of the float model: one decoder layer at a time, routed experts one at a
//! time, so that memory holds a layer's attention and shared weights plus one expert.

use crate::attention::Dims;
use crate::calibrate::{Tap, TapAt};
use crate::config::Config;
use crate::model::{build_pool, embed_rows, Ffn, Layer, Options};
use crate::moe::{add_weighted, Assignment, Moe};
use crate::weights::{Loader, TensorSource};
use crate::ModelError;
use rayon::prelude::*;

/// The model run one decoder layer at a time over fixed chunks of tokens, each chunk from an
/// empty cache (calibration): only the current layer's weights and every chunk's hidden state
/// (`tokens x hidden` f32 in all) are held, whatever the model's size. A MoE layer's routed
/// experts are read (and widened to f32) one at a time: each runs on the tokens of every chunk
/// routed to it and is dropped before the next is read.
pub struct LayerwiseRun<S: TensorSource> {
    config: Config,
    dims: Dims,
    src: S,
    opts: Options,
    pool: rayon::ThreadPool,
    /// Each chunk's hidden state after the layers run so far, `[n, hidden]`.
    chunks: Vec<Vec<f32>>,
    next: usize,
}

impl<S: TensorSource> std::fmt::Debug for LayerwiseRun<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerwiseRun")
            .field("chunks", &self.chunks.len())
            .field("next", &self.next)
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
            return Err(ModelError::Input(
                "the window must be at least 1 token".into(),
            ));
        }
        let (h, vocab) = (config.hidden_size, config.vocab_size);
        let embed = Loader { src: &src }.matrix("model.embed_tokens.weight", vocab, h)?;
        let chunks = tokens
            .chunks(window)
            .map(|chunk| embed_rows(&embed, chunk, h, vocab))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            dims: Dims::new(&config),
            pool: build_pool(opts.threads)?,
            config,
            src,
            opts,
            chunks,
            next: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The source the layers are loaded from.
    pub fn source(&self) -> &S {
        &self.src
    }

    /// The index of the layer [`LayerwiseRun::next_layer`] runs next.
    pub fn next_index(&self) -> usize {
        self.next
    }

    /// Loads the next decoder layer, runs every chunk through it (in parallel) showing `tap`
    /// its linear layers' inputs, and drops it; returns its index.
    pub fn next_layer(&mut self, tap: &dyn Tap) -> Result<usize, ModelError> {
        let i = self.next;
        if i >= self.config.num_hidden_layers {
            return Err(ModelError::Input(format!(
                "all {i} layers have run already"
            )));
        }
        let ld = Loader { src: &self.src };
        let layer = Layer::load_with(&ld, &self.config, i, false)?;
        let (c, dims, opts, h) = (
            &self.config,
            &self.dims,
            &self.opts,
            self.config.hidden_size,
        );
        let chunks = &mut self.chunks;
        self.pool.install(|| match &layer.ffn {
            Ffn::Moe(moe) => moe_layer(&ld, c, i, &layer, moe, dims, opts, chunks, tap),
            Ffn::Dense(_) => chunks.par_iter_mut().try_for_each(|x| {
                let (mut kv, n) = (Vec::new(), x.len() / h);
                let mut normed = vec![0.0f32; x.len()];
                let tap = Some(TapAt { tap, layer: i });
                layer.forward(c, dims, opts, x, &mut normed, n, &mut kv, tap)
            }),
        })?;
        self.next += 1;
        Ok(i)
    }
}

/// A chunk in the middle of a MoE layer.
struct MoeChunk<'a> {
    /// The hidden state, `[n, hidden]`.
    x: &'a mut Vec<f32>,
    /// The feed-forward block's normalised input.
    normed: Vec<f32>,
    assigned: Assignment,
    /// The routed experts' sum so far.
    y: Vec<f32>,
}

/// MoE layer `i` over every chunk: attention and routing per chunk, then each routed expert
/// loaded, run on its tokens of every chunk and dropped, then the shared experts. The sums are
/// made in the order [`Moe::forward_tapped`] makes them, so the result is the same.
#[allow(clippy::too_many_arguments)]
fn moe_layer(
    ld: &Loader<'_>,
    c: &Config,
    i: usize,
    layer: &Layer,
    moe: &Moe,
    dims: &Dims,
    opts: &Options,
    chunks: &mut [Vec<f32>],
    tap: &dyn Tap,
) -> Result<(), ModelError> {
    let (h, mode) = (c.hidden_size, opts.mode);
    let tap = Some(TapAt { tap, layer: i });
    let mut states = chunks
        .par_iter_mut()
        .map(|x| {
            let n = x.len() / h;
            let mut normed = vec![0.0f32; x.len()];
            layer.attend(c, dims, opts, x, &mut normed, n, &mut Vec::new(), tap)?;
            let assigned = moe.assign(&normed, n, mode)?;
            Ok(MoeChunk {
                y: vec![0.0f32; x.len()],
                x,
                normed,
                assigned,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    for j in 0..moe.n_experts() {
        let expert = Moe::load_expert(ld, c, i, j)?;
        states.par_iter_mut().try_for_each(|s| {
            if let Some(out) = Moe::run_expert(&expert, j, &s.normed, &s.assigned[j], mode, tap)? {
                add_weighted(&mut s.y, &s.assigned[j], &out);
            }
            Ok::<(), ModelError>(())
        })?;
    }
    states.par_iter_mut().try_for_each(|s| {
        let n = s.x.len() / h;
        moe.add_shared(&mut s.y, &s.normed, n, mode, tap)?;
        s.x.iter_mut().zip(&s.y).for_each(|(v, d)| *v += d);
        Ok(())
    })
}
