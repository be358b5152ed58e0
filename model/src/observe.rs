//! The observation hook of the forward pass: where a linear layer's input is seen ([`Site`]) and
//! the [`Tap`] that receives it. The calibration driver (`calibrate`) implements a tap; the
//! layers only call it.

/// Where a linear layer's input is observed, within one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// The normalised hidden state entering attention (q_proj, q_a_proj, kv_a_proj_with_mqa).
    AttnInput,
    /// The normalised query latent (q_b_proj).
    QLatent,
    /// The normalised KV latent `c` (kv_b_proj).
    KvLatent,
    /// The attention output, heads concatenated (o_proj).
    AttnOutput,
    /// The normalised hidden state entering the feed-forward block (dense gate/up, shared
    /// experts' gate/up, the router).
    FfnInput,
    /// `silu(gate) * up` of the dense MLP (down_proj).
    MlpAct,
    /// `silu(gate) * up` of the shared experts (their down_proj).
    SharedAct,
    /// The tokens routed to expert `j` (its gate/up).
    ExpertInput(usize),
    /// `silu(gate) * up` of expert `j` on its tokens (its down_proj).
    ExpertAct(usize),
}

/// Receives the inputs of linear layers during [`crate::Model::forward_observed`]. Called from the
/// model's worker threads (experts run in parallel).
pub trait Tap: Sync {
    /// `x` is `[n, width]`, the input rows of the layers at `site` of decoder layer `layer`;
    /// `weights` (routed experts) is each row's routing weight.
    fn record(&self, layer: usize, site: Site, x: &[f32], n: usize, weights: Option<&[f32]>);
}

/// A tap bound to one decoder layer.
#[derive(Clone, Copy)]
pub(crate) struct TapAt<'a> {
    pub tap: &'a dyn Tap,
    pub layer: usize,
}

impl<'a> TapAt<'a> {
    pub fn record(&self, site: Site, x: &[f32], n: usize, weights: Option<&[f32]>) {
        self.tap.record(self.layer, site, x, n, weights);
    }

    /// A record to be made later (inside an MLP) at `site`.
    pub fn at(self, site: Site, weights: Option<&'a [f32]>) -> Record<'a> {
        Record {
            at: self,
            site,
            weights,
        }
    }
}

/// One pending record: where, and with which row weights.
#[derive(Clone, Copy)]
pub(crate) struct Record<'a> {
    at: TapAt<'a>,
    site: Site,
    weights: Option<&'a [f32]>,
}

impl Record<'_> {
    pub fn emit(&self, x: &[f32], n: usize) {
        self.at.record(self.site, x, n, self.weights);
    }
}
