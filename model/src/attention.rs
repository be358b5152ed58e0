//! Multi-head latent attention (MLA) with the compressed KV cache.
//!
//! Per token and layer the cache holds `kv_lora_rank + qk_rope_head_dim` values: the normalised
//! latent `c` and the roped shared key `k_pe`. Two equivalent ways to attend:
//! - naive (prefill): expand every cached latent to per-head keys and values with `kv_b_proj`,
//!   then ordinary attention with qk width `nope + rope` and v width `v_head_dim`;
//! - absorbed (decode): fold the key up-projection into the query (`q_abs = W_UK^T q_nope`),
//!   attend over the 576-wide latents directly (one shared KV head), and apply the value
//!   up-projection `W_UV` to the attended latent.

use crate::config::Config;
use crate::kernels::{self, Mode};
use crate::linear::{Linear, Q8Data, Q8Linear};
use crate::observe::{Site, TapAt};
use crate::rope::Rope;
use crate::weights::Loader;
use crate::ModelError;
use rayon::prelude::*;
use std::sync::OnceLock;
use tquant_formats::q8_0::Q8Matrix;

/// Queries per block of the naive path's products (a multiple of the kernels' 4 activation
/// rows).
const QUERY_BLOCK: usize = 32;
/// The P V product's columns are whole multiples of this (the f32 kernels' column step).
const PV_STEP: usize = 32;

/// Which attention algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPath {
    /// Naive for blocks of several tokens (prefill), absorbed for single tokens (decode).
    #[default]
    Auto,
    /// Heads expanded from the KV latent (transformers' way).
    Naive,
    /// The KV up-projection absorbed into the query and output (DeepSeek's decode path).
    Absorbed,
}

/// Query projection: plain (V2-Lite) or low-rank with a norm in between (V2).
#[derive(Debug)]
enum QueryProj {
    Plain(Linear),
    LowRank {
        a: Linear,
        norm: Vec<f32>,
        b: Linear,
    },
}

/// One layer's attention weights.
#[derive(Debug)]
pub struct Attention {
    q: QueryProj,
    kv_a: Linear,
    kv_a_norm: Vec<f32>,
    kv_b: Linear,
    /// Per head `W_UK[h]^T` as a dense `[kv_lora_rank, qk_nope]` f32 matrix, for the absorbed
    /// path in exact mode (a transposed product the kernels do not do; dequantized if
    /// `kv_b_proj` is packed). Built on first use.
    w_uk_t: OnceLock<Vec<Vec<f32>>>,
    /// The same for fast mode at a stored width ([`Attention::uk_fast`]). Built on first use.
    w_uk_t_fast: OnceLock<Vec<Linear>>,
    /// Per head `W_UV[h]`: rows of `kv_b_proj`, `[v_head_dim, kv_lora_rank]`, no copy.
    w_uv: Vec<Linear>,
    o: Linear,
}

/// Shapes and constants shared by every layer.
#[derive(Debug, Clone)]
pub(crate) struct Dims {
    pub heads: usize,
    pub nope: usize,
    pub rope: usize,
    pub v: usize,
    pub lora: usize,
    pub eps: f32,
    pub scale: f32,
    pub rope_table: Rope,
}

impl Dims {
    pub fn new(c: &Config) -> Self {
        Self {
            heads: c.num_attention_heads,
            nope: c.qk_nope_head_dim,
            rope: c.qk_rope_head_dim,
            v: c.v_head_dim,
            lora: c.kv_lora_rank,
            eps: c.rms_norm_eps,
            scale: c.softmax_scale(),
            rope_table: Rope::new(&c.rope, c.qk_rope_head_dim),
        }
    }
    fn qk(&self) -> usize {
        self.nope + self.rope
    }
    fn width(&self) -> usize {
        self.lora + self.rope
    }
}

/// RMSNorm in place: `w * x / sqrt(mean(x^2) + eps)`, accumulated in f64 for stability.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / ((ms as f32) + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = g * (*v * inv);
    }
}

/// Softmax of `s` in place (max subtracted).
fn softmax(s: &mut [f32]) {
    let m = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sum = 0.0f32;
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    s.iter_mut().for_each(|v| *v *= inv);
}

impl Attention {
    pub(crate) fn load(ld: &Loader<'_>, c: &Config, i: usize) -> Result<Self, ModelError> {
        let p = format!("model.layers.{i}.self_attn");
        let (h, n) = (c.hidden_size, c.num_attention_heads);
        let qk = c.qk_head_dim();
        let q = match c.q_lora_rank {
            None => QueryProj::Plain(ld.matrix(&format!("{p}.q_proj.weight"), n * qk, h)?),
            Some(r) => QueryProj::LowRank {
                a: ld.matrix(&format!("{p}.q_a_proj.weight"), r, h)?,
                norm: ld.vector(&format!("{p}.q_a_layernorm.weight"), r)?,
                b: ld.matrix(&format!("{p}.q_b_proj.weight"), n * qk, r)?,
            },
        };
        let (lora, nope, v) = (c.kv_lora_rank, c.qk_nope_head_dim, c.v_head_dim);
        let kv_a = ld.matrix(
            &format!("{p}.kv_a_proj_with_mqa.weight"),
            lora + c.qk_rope_head_dim,
            h,
        )?;
        let kv_a_norm = ld.vector(&format!("{p}.kv_a_layernorm.weight"), lora)?;
        let kv_b = ld.matrix(&format!("{p}.kv_b_proj.weight"), n * (nope + v), lora)?;
        let w_uv = (0..n)
            .map(|hd| kv_b.row_range(hd * (nope + v) + nope, v))
            .collect();
        let o = ld.matrix(&format!("{p}.o_proj.weight"), h, n * v)?;
        Ok(Self {
            q,
            kv_a,
            kv_a_norm,
            kv_b,
            w_uk_t: OnceLock::new(),
            w_uk_t_fast: OnceLock::new(),
            w_uv,
            o,
        })
    }

    /// Per head `W_UK[h]^T` (`[lora, nope]`) in f32: `kv_b_proj`'s key rows, transposed.
    fn uk_transposed(&self, d: &Dims) -> Vec<Vec<f32>> {
        let (lora, nope) = (d.lora, d.nope);
        // kv_b rows are head-major, each head [k_nope (nope) | v (v)].
        let mut row = vec![0.0f32; lora];
        (0..d.heads)
            .map(|hd| {
                let mut t = vec![0.0f32; lora * nope];
                for j in 0..nope {
                    self.kv_b.row(hd * (nope + d.v) + j, &mut row);
                    for (ci, &x) in row.iter().enumerate() {
                        t[ci * nope + j] = x;
                    }
                }
                t
            })
            .collect()
    }

    fn uk_exact(&self, d: &Dims) -> &[Vec<f32>] {
        self.w_uk_t.get_or_init(|| self.uk_transposed(d))
    }

    /// Fast mode's `W_UK[h]^T`, at `kv_b_proj`'s width where that is float (bf16 and f16 stay,
    /// values unchanged), and as q8_0 where `kv_b_proj` is quantized: the dequantized values
    /// rounded once more, to int8 with a scale per 32 (an error of at most `amax / 254` per
    /// weight, small beside the 4-bit code's), so the transposed copy reads about a quarter of
    /// the f32 bytes.
    fn uk_fast(&self, d: &Dims) -> Result<&[Linear], ModelError> {
        if let Some(v) = self.w_uk_t_fast.get() {
            return Ok(v);
        }
        let (lora, nope) = (d.lora, d.nope);
        let built = self
            .uk_transposed(d)
            .into_iter()
            .map(|t| match &self.kv_b {
                // The transposed values are the stored ones: no rounding at the same width.
                Linear::Dense(m) => Ok(Linear::Dense(m.like(lora, nope, t))),
                Linear::Quant(_) | Linear::Q8(_) => {
                    let q = Q8Matrix::quantize(&t, lora, nope)
                        .map_err(|e| ModelError::tensor("kv_b_proj (W_UK^T)", e.to_string()))?;
                    Ok(Linear::Q8(Q8Linear::new(lora, nope, Q8Data::owned(q), 0)?))
                }
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(self.w_uk_t_fast.get_or_init(|| built))
    }

    /// Bytes of `W_UK^T` the absorbed path reads per token in `mode`.
    pub(crate) fn uk_bytes(&self, d: &Dims, mode: Mode) -> usize {
        let per_head = d.lora * d.nope;
        let fast_width = match &self.kv_b {
            Linear::Dense(m) if m.f32_values().is_some() => 4 * per_head,
            Linear::Dense(_) => 2 * per_head,
            Linear::Quant(_) | Linear::Q8(_) => {
                d.lora * (d.nope + 2 * d.nope.div_ceil(kernels::int8::Q8_BLOCK))
            }
        };
        d.heads
            * match mode {
                Mode::Exact => 4 * per_head,
                Mode::Fast => fast_width,
            }
    }

    /// Linear layers of this attention, for byte counts.
    pub(crate) fn linears(&self) -> Vec<&Linear> {
        let mut v = match &self.q {
            QueryProj::Plain(q) => vec![q],
            QueryProj::LowRank { a, b, .. } => vec![a, b],
        };
        v.extend([&self.kv_a, &self.kv_b, &self.o]);
        v
    }

    /// Attention of `n` new tokens (normalised hidden states `x`, `[n, hidden]`) at positions
    /// `cache.len() / width ..`; appends their latents to `cache` and returns `[n, hidden]`.
    /// `tap` sees the inputs of q_b_proj, kv_b_proj and o_proj.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        d: &Dims,
        x: &[f32],
        n: usize,
        cache: &mut Vec<f32>,
        path: AttentionPath,
        mode: Mode,
        tap: Option<TapAt<'_>>,
    ) -> Result<Vec<f32>, ModelError> {
        let (heads, qk, w) = (d.heads, d.qk(), d.width());
        let pos0 = cache.len() / w;
        let mut q = match &self.q {
            QueryProj::Plain(l) => l.apply(x, n, mode)?,
            QueryProj::LowRank { a, norm, b } => {
                let mut qa = a.apply(x, n, mode)?;
                qa.chunks_exact_mut(a.rows())
                    .for_each(|r| rms_norm(r, norm, d.eps));
                if let Some(t) = tap {
                    t.record(Site::QLatent, &qa, n, None);
                }
                b.apply(&qa, n, mode)?
            }
        };
        let mut ckv = self.kv_a.apply(x, n, mode)?;
        let mut cs = vec![0.0f32; d.rope];
        for (t, (qt, kt)) in q
            .chunks_exact_mut(heads * qk)
            .zip(ckv.chunks_exact_mut(w))
            .enumerate()
        {
            d.rope_table.cos_sin(pos0 + t, &mut cs);
            rms_norm(&mut kt[..d.lora], &self.kv_a_norm, d.eps);
            Rope::apply(&cs, &mut kt[d.lora..]);
            for head in qt.chunks_exact_mut(qk) {
                Rope::apply(&cs, &mut head[d.nope..]);
            }
        }
        if let Some(t) = tap {
            // kv_b_proj's input: each new token's normalised latent (both paths use it).
            let c: Vec<f32> = ckv
                .chunks_exact(w)
                .flat_map(|r| r[..d.lora].iter().copied())
                .collect();
            t.record(Site::KvLatent, &c, n, None);
        }
        cache.extend_from_slice(&ckv);
        let absorbed = match path {
            AttentionPath::Auto => n == 1,
            AttentionPath::Naive => false,
            AttentionPath::Absorbed => true,
        };
        let attn = if absorbed {
            self.attend_absorbed(d, &q, n, cache, pos0, mode)?
        } else {
            self.attend_naive(d, &q, n, cache, pos0, mode)?
        };
        if let Some(t) = tap {
            t.record(Site::AttnOutput, &attn, n, None);
        }
        self.o.apply(&attn, n, mode)
    }

    /// Expands every cached latent into keys and values, then attends head by head (one task
    /// per head: a scores product `Q_h K_h^T`, causal softmax, then `P V_h`).
    fn attend_naive(
        &self,
        d: &Dims,
        q: &[f32],
        n: usize,
        cache: &[f32],
        pos0: usize,
        mode: Mode,
    ) -> Result<Vec<f32>, ModelError> {
        let (heads, qk, w, kvw) = (d.heads, d.qk(), d.width(), d.nope + d.v);
        let total = cache.len() / w;
        let latents: Vec<f32> = cache
            .chunks_exact(w)
            .flat_map(|r| r[..d.lora].iter().copied())
            .collect();
        let kv = self.kv_b.apply(&latents, total, mode)?; // [total, heads * (nope + v)]
        let work = heads * n * total * (qk + d.v);
        let per_head = crate::map_range(heads, work, |h| {
            let mut k = vec![0.0f32; total * qk];
            for (j, kr) in k.chunks_exact_mut(qk).enumerate() {
                kr[..d.nope].copy_from_slice(&kv[j * heads * kvw + h * kvw..][..d.nope]);
                kr[d.nope..].copy_from_slice(&cache[j * w + d.lora..][..d.rope]);
            }
            let mut qh = vec![0.0f32; n * qk];
            for (t, r) in qh.chunks_exact_mut(qk).enumerate() {
                r.copy_from_slice(&q[t * heads * qk + h * qk..][..qk]);
            }
            // V_h^T ([v, total]) once; each block copies the leading columns it needs.
            let mut vt_all = vec![0.0f32; d.v * total];
            for j in 0..total {
                let v = &kv[j * heads * kvw + h * kvw + d.nope..][..d.v];
                for (c, &x) in v.iter().enumerate() {
                    vt_all[c * total + j] = x;
                }
            }
            let mut o = vec![0.0f32; n * d.v];
            // Causal: a block of queries needs only the keys up to its last one, so the
            // products skip the masked part. Blocks are a multiple of the kernels' 4
            // activation rows and the P V product keeps whole 32-column steps, so every value
            // is the one the full products give (the skipped terms are zeros).
            for t0 in (0..n).step_by(QUERY_BLOCK) {
                let t1 = (t0 + QUERY_BLOCK).min(n);
                let nb = t1 - t0;
                let keys = pos0 + t1;
                let mut s = vec![0.0f32; nb * keys];
                kernels::matmul_f32(&k[..keys * qk], keys, qk, &qh[t0 * qk..t1 * qk], nb, &mut s)?;
                let cols = keys.next_multiple_of(PV_STEP).min(total);
                let mut p = vec![0.0f32; nb * cols];
                for (t, (sr, pr)) in s
                    .chunks_exact_mut(keys)
                    .zip(p.chunks_exact_mut(cols))
                    .enumerate()
                {
                    let visible = &mut sr[..pos0 + t0 + t + 1];
                    visible.iter_mut().for_each(|v| *v *= d.scale);
                    softmax(visible);
                    pr[..visible.len()].copy_from_slice(visible);
                }
                // P V_h as a product with V_h^T ([v, cols]) as the weight.
                let mut vt = vec![0.0f32; d.v * cols];
                for (dst, src) in vt.chunks_exact_mut(cols).zip(vt_all.chunks_exact(total)) {
                    dst.copy_from_slice(&src[..cols]);
                }
                kernels::matmul_f32(&vt, d.v, cols, &p, nb, &mut o[t0 * d.v..t1 * d.v])?;
            }
            Ok(o)
        })?;
        let mut out = vec![0.0f32; n * heads * d.v];
        for (h, o) in per_head.iter().enumerate() {
            for t in 0..n {
                out[(t * heads + h) * d.v..][..d.v].copy_from_slice(&o[t * d.v..][..d.v]);
            }
        }
        Ok(out)
    }

    /// Attends over the latents directly, with `W_UK` folded into the query and `W_UV` applied
    /// to the attended latent.
    fn attend_absorbed(
        &self,
        d: &Dims,
        q: &[f32],
        n: usize,
        cache: &[f32],
        pos0: usize,
        mode: Mode,
    ) -> Result<Vec<f32>, ModelError> {
        let (heads, qk, w) = (d.heads, d.qk(), d.width());
        let total = cache.len() / w;
        // Queries as [n, heads, lora + rope]: q_abs = W_UK^T q_nope, then the roped q_pe.
        let mut qcat = vec![0.0f32; n * heads * w];
        let mut qn = vec![0.0f32; n * d.nope];
        let mut qa = vec![0.0f32; n * d.lora];
        for h in 0..heads {
            for t in 0..n {
                let src = &q[t * heads * qk + h * qk..][..qk];
                qn[t * d.nope..][..d.nope].copy_from_slice(&src[..d.nope]);
                qcat[(t * heads + h) * w + d.lora..][..d.rope].copy_from_slice(&src[d.nope..]);
            }
            match mode {
                Mode::Exact => {
                    kernels::matmul_f32(&self.uk_exact(d)[h], d.lora, d.nope, &qn, n, &mut qa)?
                }
                // f32 activations (the q8_0 weights widened in registers): the query is not
                // rounded to int8 on top of the keys' q8_0 rounding.
                Mode::Fast => self.uk_fast(d)?[h].forward(&qn, n, &mut qa, Mode::Exact)?,
            }
            for t in 0..n {
                qcat[(t * heads + h) * w..][..d.lora].copy_from_slice(&qa[t * d.lora..][..d.lora]);
            }
        }
        // Scores of every query against every cached latent: one product with the cache as W.
        let mut scores = vec![0.0f32; n * heads * total];
        kernels::matmul_f32(cache, total, w, &qcat, n * heads, &mut scores)?;
        let mut lat = vec![0.0f32; n * heads * d.lora];
        let attend = |th: usize, o: &mut [f32], s: &mut [f32]| {
            let visible = pos0 + th / heads + 1;
            let s = &mut s[..visible];
            s.iter_mut().for_each(|v| *v *= d.scale);
            softmax(s);
            o.fill(0.0);
            for (j, &p) in s.iter().enumerate() {
                let c = &cache[j * w..][..d.lora];
                o.iter_mut().zip(c).for_each(|(a, &b)| *a += p * b);
            }
        };
        if n * heads * total * d.lora >= kernels::PARALLEL_MIN_WORK {
            lat.par_chunks_mut(d.lora)
                .zip(scores.par_chunks_mut(total))
                .enumerate()
                .for_each(|(th, (o, s))| attend(th, o, s));
        } else {
            lat.chunks_mut(d.lora)
                .zip(scores.chunks_mut(total))
                .enumerate()
                .for_each(|(th, (o, s))| attend(th, o, s));
        }
        // Value up-projection per head: [n, lora] -> [n, v].
        let mut out = vec![0.0f32; n * heads * d.v];
        let mut lh = vec![0.0f32; n * d.lora];
        let mut vh = vec![0.0f32; n * d.v];
        for h in 0..heads {
            for t in 0..n {
                lh[t * d.lora..][..d.lora]
                    .copy_from_slice(&lat[(t * heads + h) * d.lora..][..d.lora]);
            }
            self.w_uv[h].forward(&lh, n, &mut vh, mode)?;
            for t in 0..n {
                out[(t * heads + h) * d.v..][..d.v].copy_from_slice(&vh[t * d.v..][..d.v]);
            }
        }
        Ok(out)
    }
}
