//! The DeepSeek-V2 / V3 decoder: embedding, layers of MLA + (dense MLP or DeepSeekMoE), final norm and
//! LM head; prefill of many tokens at once and single-token decode over a [`KvCache`].

use crate::attention::{rms_norm, Attention, AttentionPath, Dims};
use crate::config::Config;
use crate::kernels::Mode;
use crate::linear::Linear;
use crate::moe::{Mlp, Moe};
use crate::observe::{Site, Tap, TapAt};
use crate::weights::{Loader, TensorSource};
use crate::ModelError;
use std::sync::Arc;

/// Run-time options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Worker threads (0: rayon's default, one per core).
    pub threads: usize,
    /// Kernel accuracy mode for quantized products.
    pub mode: Mode,
    /// Which attention formulation runs.
    pub attention: AttentionPath,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            threads: 0,
            mode: Mode::Exact,
            attention: AttentionPath::Auto,
        }
    }
}

impl Options {
    /// The options a front end's switches give: `threads`, and the kernel mode `fast` or
    /// `exact` names (`fast` where both are set), else `default` (the command's own).
    ///
    /// ```
    /// use tquant_model::{Mode, Options};
    /// assert_eq!(Options::with_switches(2, false, false, Mode::Fast).mode, Mode::Fast);
    /// assert_eq!(Options::with_switches(2, false, true, Mode::Fast).mode, Mode::Exact);
    /// assert_eq!(Options::with_switches(2, true, false, Mode::Exact).threads, 2);
    /// ```
    pub fn with_switches(threads: usize, fast: bool, exact: bool, default: Mode) -> Self {
        let mode = match (fast, exact) {
            (true, _) => Mode::Fast,
            (_, true) => Mode::Exact,
            _ => default,
        };
        Self {
            threads,
            mode,
            ..Self::default()
        }
    }
}

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every position (evaluation).
    All,
    /// The last position only (generation).
    Last,
}

#[derive(Debug)]
pub(crate) enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

#[derive(Debug)]
pub(crate) struct Layer {
    attn_norm: Vec<f32>,
    attn: Attention,
    ffn_norm: Vec<f32>,
    pub(crate) ffn: Ffn,
}

/// The compressed KV cache: per layer, `kv_lora_rank + qk_rope_head_dim` values per token.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Vec<f32>>,
    width: usize,
    len: usize,
}

impl KvCache {
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything after the first `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.layers
                .iter_mut()
                .for_each(|l| l.truncate(len * self.width));
            self.len = len;
        }
    }

    /// Values stored per token and layer.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes the cache holds (f32 values).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.len() * 4).sum()
    }
}

/// A loaded model.
#[derive(Debug)]
pub struct Model {
    config: Config,
    dims: Dims,
    embed: Linear,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    opts: Options,
    pool: Arc<rayon::ThreadPool>,
    notes: Vec<String>,
}

impl Model {
    /// Builds a model from any tensor source.
    pub fn from_source(
        config: Config,
        src: &dyn TensorSource,
        opts: Options,
    ) -> Result<Self, ModelError> {
        let ld = Loader { src };
        let c = &config;
        let h = c.hidden_size;
        let embed = ld.matrix("model.embed_tokens.weight", c.vocab_size, h)?;
        let lm_head = if src.contains("lm_head.weight") || !c.tie_word_embeddings {
            ld.matrix("lm_head.weight", c.vocab_size, h)?
        } else {
            embed.clone()
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(&ld, c, i))
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            dims: Dims::new(c),
            embed,
            layers,
            norm: ld.vector("model.norm.weight", h)?,
            lm_head,
            pool: Arc::new(build_pool(opts.threads)?),
            opts,
            config,
            notes: Vec::new(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Remarks on how the weights were loaded (e.g. a layout held dequantized).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub(crate) fn set_notes(&mut self, notes: Vec<String>) {
        self.notes = notes;
    }

    /// The options the model was opened with.
    pub fn options(&self) -> Options {
        self.opts
    }

    /// Changes the options (a new thread count builds a new pool).
    pub fn set_options(&mut self, opts: Options) -> Result<(), ModelError> {
        if opts.threads != self.opts.threads {
            self.pool = Arc::new(build_pool(opts.threads)?);
        }
        self.opts = opts;
        Ok(())
    }

    /// Threads the model runs on.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` on the model's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![Vec::new(); self.layers.len()],
            width: self.config.kv_cache_width(),
            len: 0,
        }
    }

    /// Whether any linear layer is quantized.
    pub fn is_quantized(&self) -> bool {
        self.linears().any(|l| l.is_quantized())
    }

    fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers
            .iter()
            .flat_map(|l| {
                let mut v = l.attn.linears();
                match &l.ffn {
                    Ffn::Dense(m) => v.extend(m.linears()),
                    Ffn::Moe(m) => v.extend(m.linears()),
                }
                v
            })
            .chain([&self.lm_head])
    }

    /// Bytes of the transposed key up-projections `W_UK^T` the absorbed attention (decode)
    /// reads per token in the current mode, over all layers: f32 in exact mode; in fast mode
    /// at `kv_b_proj`'s float width, or q8_0 where it is quantized. Not in
    /// [`Model::active_weight_bytes`], which counts the stored matrices.
    pub fn absorbed_key_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.attn.uk_bytes(&self.dims, self.opts.mode))
            .sum()
    }

    /// Bytes of weights one decoded token reads (attention, active experts, LM head).
    pub fn active_weight_bytes(&self) -> usize {
        let mut b = self.lm_head.bytes();
        for l in &self.layers {
            b += l.attn.linears().iter().map(|x| x.bytes()).sum::<usize>();
            b += match &l.ffn {
                Ffn::Dense(m) => m.linears().iter().map(|x| x.bytes()).sum(),
                Ffn::Moe(m) => m.active_bytes(),
            };
        }
        b
    }

    /// Runs `tokens` (positions `cache.len()..`) through the model, appending them to `cache`.
    /// Returns logits `[positions, vocab]` for all tokens or only the last.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        self.pool
            .install(|| self.forward_here(tokens, cache, which))
    }

    /// [`Model::forward`] on the calling thread's pool (for callers already inside
    /// [`Model::install`], e.g. evaluating chunks in parallel).
    pub fn forward_here(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Vec<f32>, ModelError> {
        self.forward_inner(tokens, cache, which, None)
    }

    /// [`Model::forward_here`] that also shows `tap` the input of every linear layer
    /// (calibration: the `calibrate` module implements a tap).
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        tap: &dyn Tap,
    ) -> Result<Vec<f32>, ModelError> {
        self.forward_inner(tokens, cache, which, Some(tap))
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
        tap: Option<&dyn Tap>,
    ) -> Result<Vec<f32>, ModelError> {
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if cache.layers.len() != self.layers.len() || cache.width != self.config.kv_cache_width() {
            return Err(ModelError::CacheMismatch);
        }
        let (h, vocab, mode) = (
            self.config.hidden_size,
            self.config.vocab_size,
            self.opts.mode,
        );
        let mut x = embed_rows(&self.embed, tokens, h, vocab)?;
        if let Err(e) = self.layers_forward(&mut x, n, cache, tap) {
            // Leave the cache as it was: some layers may already hold the new tokens.
            let keep = cache.len * cache.width;
            cache.layers.iter_mut().for_each(|l| l.truncate(keep));
            return Err(e);
        }
        let eps = self.config.rms_norm_eps;
        cache.len += n;
        let (rows, m) = match which {
            Logits::All => (&mut x[..], n),
            Logits::Last => (&mut x[(n - 1) * h..], 1),
        };
        rows.chunks_exact_mut(h)
            .for_each(|r| rms_norm(r, &self.norm, eps));
        self.lm_head.apply(rows, m, mode)
    }
}

impl Model {
    /// The decoder layers over `x` (`[n, hidden]`, updated in place), appending to `cache`.
    fn layers_forward(
        &self,
        x: &mut [f32],
        n: usize,
        cache: &mut KvCache,
        tap: Option<&dyn Tap>,
    ) -> Result<(), ModelError> {
        let mut normed = vec![0.0f32; x.len()];
        for (i, (layer, kv)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate() {
            let tap = tap.map(|tap| TapAt { tap, layer: i });
            layer.forward(
                &self.config,
                &self.dims,
                &self.opts,
                x,
                &mut normed,
                n,
                kv,
                tap,
            )?;
        }
        Ok(())
    }
}

impl Layer {
    /// Decoder layer `i`'s weights.
    fn load(ld: &Loader, c: &Config, i: usize) -> Result<Self, ModelError> {
        Self::load_with(ld, c, i, true)
    }

    /// Decoder layer `i`'s weights, a MoE layer's routed experts only if `routed`.
    pub(crate) fn load_with(
        ld: &Loader,
        c: &Config,
        i: usize,
        routed: bool,
    ) -> Result<Self, ModelError> {
        let h = c.hidden_size;
        let p = format!("model.layers.{i}");
        let ffn = if c.is_moe_layer(i) && routed {
            Ffn::Moe(Moe::load(ld, c, i)?)
        } else if c.is_moe_layer(i) {
            Ffn::Moe(Moe::load_without_experts(ld, c, i)?)
        } else {
            Ffn::Dense(Mlp::load(ld, &format!("{p}.mlp"), c.intermediate_size, h)?)
        };
        Ok(Layer {
            attn_norm: ld.vector(&format!("{p}.input_layernorm.weight"), h)?,
            attn: Attention::load(ld, c, i)?,
            ffn_norm: ld.vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
            ffn,
        })
    }

    /// The attention half: `x += attention(norm(x))` (appending to `kv`), then `normed` =
    /// the feed-forward block's normalised input.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend(
        &self,
        c: &Config,
        dims: &Dims,
        opts: &Options,
        x: &mut [f32],
        normed: &mut [f32],
        n: usize,
        kv: &mut Vec<f32>,
        tap: Option<TapAt<'_>>,
    ) -> Result<(), ModelError> {
        let (h, eps, mode) = (c.hidden_size, c.rms_norm_eps, opts.mode);
        normed.copy_from_slice(x);
        normed
            .chunks_exact_mut(h)
            .for_each(|r| rms_norm(r, &self.attn_norm, eps));
        if let Some(t) = tap {
            t.record(Site::AttnInput, normed, n, None);
        }
        let a = self
            .attn
            .forward(dims, normed, n, kv, opts.attention, mode, tap)?;
        x.iter_mut().zip(&a).for_each(|(v, d)| *v += d);
        normed.copy_from_slice(x);
        normed
            .chunks_exact_mut(h)
            .for_each(|r| rms_norm(r, &self.ffn_norm, eps));
        if let Some(t) = tap {
            t.record(Site::FfnInput, normed, n, None);
        }
        Ok(())
    }

    /// This layer over `x` (`[n, hidden]`, updated in place), appending to its cache `kv`;
    /// `normed` is scratch of `x`'s size.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        c: &Config,
        dims: &Dims,
        opts: &Options,
        x: &mut [f32],
        normed: &mut [f32],
        n: usize,
        kv: &mut Vec<f32>,
        tap: Option<TapAt<'_>>,
    ) -> Result<(), ModelError> {
        self.attend(c, dims, opts, x, normed, n, kv, tap)?;
        let mode = opts.mode;
        let f = match &self.ffn {
            Ffn::Dense(m) => {
                m.forward_tapped(normed, n, mode, tap.map(|t| t.at(Site::MlpAct, None)))?
            }
            Ffn::Moe(m) => m.forward_tapped(normed, n, mode, tap)?,
        };
        x.iter_mut().zip(&f).for_each(|(v, d)| *v += d);
        Ok(())
    }
}

/// The embedding rows of `tokens`, `[n, hidden]`.
pub(crate) fn embed_rows(
    embed: &Linear,
    tokens: &[u32],
    h: usize,
    vocab: usize,
) -> Result<Vec<f32>, ModelError> {
    let mut x = vec![0.0f32; tokens.len() * h];
    for (t, row) in tokens.iter().zip(x.chunks_exact_mut(h)) {
        if *t as usize >= vocab {
            return Err(ModelError::TokenOutOfVocabulary { token: *t, vocab });
        }
        embed.row(*t as usize, row);
    }
    Ok(x)
}

pub(crate) fn build_pool(threads: usize) -> Result<rayon::ThreadPool, ModelError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|source| ModelError::Threads { threads, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_default_holds_unless_a_switch_names_the_mode() {
        // `run` passes Fast, `eval` and `logits` Exact; clap refuses both switches at once.
        for default in Mode::ALL {
            let mode = |fast, exact| Options::with_switches(0, fast, exact, default).mode;
            assert_eq!(mode(false, false), default);
            assert_eq!(mode(false, true), Mode::Exact);
            assert_eq!(mode(true, false), Mode::Fast);
        }
    }
}
