//! Which tensors are quantized: by name globs and shape, so that DeepSeek, Llama, Mixtral,
//! Qwen-MoE and BERT-style checkpoints all convert with the same default.

use crate::dtype::is_float;
use crate::dtype::is_fp8;
use safetensors::Dtype;

/// What the converter does with one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Quantize (a 2-D matrix, or a fused 3-D `[experts, rows, cols]` tensor per expert).
    Quantize,
    /// Copy unchanged in its own dtype.
    Keep,
    /// Leave out of the output (derived buffers such as `rotary_emb.inv_freq`).
    Skip,
    /// Leave out of the output because `--drop` names it (e.g. DeepSeek-V3's multi-token
    /// prediction layer, which inference does not run).
    Drop,
    /// Store as q8_0 (int8 codes, an f16 scale per 32 along a row): the embeddings and the
    /// output head under [`KeepAs::Q8_0`], in tquant's layout.
    Q8,
}

impl Action {
    /// The lower-case name summaries use.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quantize => "quantize",
            Action::Keep => "keep",
            Action::Skip => "skip",
            Action::Drop => "drop",
            Action::Q8 => "q8_0",
        }
    }
}

/// How the matrices the default policy does not quantize to 4 bits, the embeddings and the
/// output head (`lm_head`), are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KeepAs {
    /// q8_0 (8.5 bits per weight; ggml's Q8_0): the default in tquant's layout.
    #[default]
    Q8_0,
    /// Their source dtype, copied unchanged.
    Source,
    /// The output head as q8_0, the token embeddings quantized like the decoder matrices (a
    /// model reads one row of the embeddings per token, so their 4 bits cost little; the
    /// converter stores tied embeddings, which are also the head, as q8_0).
    HeadQ8_0,
}

impl KeepAs {
    /// The name settings use (`q8_0`, `source`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Source => "source",
            Self::HeadQ8_0 => "head-q8_0",
        }
    }
}

impl std::fmt::Display for KeepAs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeepAs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "q8_0" => Ok(Self::Q8_0),
            "source" => Ok(Self::Source),
            "head-q8_0" => Ok(Self::HeadQ8_0),
            _ => Err(format!("unknown storage '{s}' (q8_0, source, head-q8_0)")),
        }
    }
}

/// Tensors never written: buffers recomputed by every runtime.
pub const SKIP_GLOBS: [&str; 1] = ["*rotary_emb.inv_freq"];

/// Routers and gates that stay in full precision (vLLM and llama.cpp never quantize them).
pub const ROUTER_GLOBS: [&str; 5] = [
    "*.mlp.gate.weight",
    "*.block_sparse_moe.gate.weight",
    "*.shared_expert_gate.weight",
    "*.router.weight",
    "*.mlp.router.*",
];

/// The tensor policy: defaults plus the user's `--include` / `--exclude` / `--drop` globs.
///
/// Default: quantize float matrices inside repeated blocks (`layers.N.`, `layer.N.`, `h.N.`,
/// `blocks.N.`): attention projections, dense MLPs, shared experts, routed experts (per expert,
/// or fused 3-D tensors whose name mentions `experts`). Keep embeddings, `lm_head`, routers,
/// norms and every 1-D tensor (the embeddings and `lm_head` as q8_0 with
/// [`Policy::decide_keeping`] and [`KeepAs::Q8_0`], tquant's layout's default). `--exclude` wins over `--include`, which wins over the default;
/// an included tensor is still only quantized when it is a float matrix (2-D or 3-D; FP8 with
/// block scales counts as float). `--drop` wins over everything: the tensor is not written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Globs of tensors quantized besides the default ones.
    pub include: Vec<String>,
    /// Globs of tensors kept unquantized (wins over `include`).
    pub exclude: Vec<String>,
    /// Globs of tensors left out of the output (wins over everything).
    pub drop: Vec<String>,
}

impl Policy {
    /// What happens to tensor `name` of `shape` and `dtype`, the embeddings and output head
    /// kept at their source precision (as every layout but tquant's stores them).
    pub fn decide(&self, name: &str, shape: &[usize], dtype: Dtype) -> Action {
        self.decide_keeping(name, shape, dtype, KeepAs::Source)
    }

    /// [`Policy::decide`], with the embeddings and the output head that the default keeps
    /// stored as `keep` says: [`Action::Q8`] for a 2-D float one under [`KeepAs::Q8_0`]. An
    /// `exclude` glob still keeps them at source precision, an `include` glob still quantizes
    /// them to 4 bits.
    pub fn decide_keeping(
        &self,
        name: &str,
        shape: &[usize],
        dtype: Dtype,
        keep: KeepAs,
    ) -> Action {
        if self.drop.iter().any(|g| glob_match(g, name)) {
            return Action::Drop;
        }
        if SKIP_GLOBS.iter().any(|g| glob_match(g, name)) {
            return Action::Skip;
        }
        let float = is_float(dtype) || is_fp8(dtype);
        let quantizable = float && (2..=3).contains(&shape.len()) && !shape.contains(&0);
        if !quantizable || self.exclude.iter().any(|g| glob_match(g, name)) {
            return Action::Keep;
        }
        if self.include.iter().any(|g| glob_match(g, name)) {
            return Action::Quantize;
        }
        if default_quantizes(name, shape) {
            return Action::Quantize;
        }
        if shape.len() != 2 || !is_embedding_or_head(name) {
            return Action::Keep;
        }
        match keep {
            KeepAs::Q8_0 => Action::Q8,
            KeepAs::HeadQ8_0 if is_head(name) => Action::Q8,
            KeepAs::HeadQ8_0 => Action::Quantize,
            KeepAs::Source => Action::Keep,
        }
    }
}

/// Token (and position) embeddings, and the output head: `*embed*.weight`, `lm_head.weight`.
fn is_embedding_or_head(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.ends_with("weight")
        && !lower.contains("norm")
        && (lower.contains("embed") || is_head(name))
}

/// The output head: `lm_head.weight`.
pub fn is_head(name: &str) -> bool {
    name == "lm_head.weight" || name.ends_with(".lm_head.weight")
}

fn default_quantizes(name: &str, shape: &[usize]) -> bool {
    let lower = name.to_ascii_lowercase();
    if !in_repeated_block(name)
        || lower.contains("norm")
        || lower.contains("embed")
        || ROUTER_GLOBS.iter().any(|g| glob_match(g, name))
    {
        return false;
    }
    match shape.len() {
        2 => name.ends_with("weight"),
        3 => name.contains("experts"),
        _ => false,
    }
}

/// True when some segment of the dotted name is a number following a word (`layers.3`).
fn in_repeated_block(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).any(|w| {
        !w[1].is_empty()
            && w[1].bytes().all(|b| b.is_ascii_digit())
            && matches!(w[0], "layers" | "layer" | "h" | "blocks" | "block")
    })
}

/// Shell-style glob over the whole name: `*` matches any run of characters (dots included),
/// `?` any one character; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and the text position it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(
            "*.mlp.gate.weight",
            "model.layers.1.mlp.gate.weight"
        ));
        assert!(!glob_match(
            "*.mlp.gate.weight",
            "model.layers.1.mlp.gate_proj.weight"
        ));
        assert!(glob_match(
            "model.layers.?.*",
            "model.layers.3.self_attn.q_proj.weight"
        ));
        assert!(!glob_match("model.layers.?.*", "model.layers.13.x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYbc"));
        assert!(!glob_match("a*b*c", "aXXbYYb"));
    }

    #[test]
    fn default_policy_quantizes_decoder_matrices_only() {
        let p = Policy::default();
        let q = |n: &str, s: &[usize]| p.decide(n, s, Dtype::BF16);
        for n in [
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.kv_b_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.experts.7.up_proj.weight",
            "model.layers.1.mlp.shared_experts.gate_proj.weight",
            "model.layers.1.block_sparse_moe.experts.0.w1.weight",
            "encoder.layer.0.attention.self.query.weight",
        ] {
            assert_eq!(q(n, &[8, 16]), Action::Quantize, "{n}");
        }
        assert_eq!(
            q("model.layers.1.mlp.experts.gate_up_proj", &[4, 8, 16]),
            Action::Quantize
        );
        for n in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.1.mlp.gate.weight",
            "model.layers.1.block_sparse_moe.gate.weight",
            "model.layers.1.mlp.shared_expert_gate.weight",
            "model.layers.0.input_layernorm.weight",
            "encoder.layer.0.attention.output.LayerNorm.weight",
        ] {
            assert_eq!(q(n, &[8, 16]), Action::Keep, "{n}");
        }
        assert_eq!(
            q("model.layers.0.input_layernorm.weight", &[16]),
            Action::Keep
        );
        assert_eq!(
            q("model.layers.0.self_attn.rotary_emb.inv_freq", &[8]),
            Action::Skip
        );
        assert_eq!(
            p.decide(
                "model.layers.0.self_attn.q_proj.weight",
                &[8, 16],
                Dtype::I32
            ),
            Action::Keep
        );
    }

    #[test]
    fn embeddings_and_head_are_q8_0_when_asked() {
        let p = Policy::default();
        let d = |n: &str, s: &[usize], k| p.decide_keeping(n, s, Dtype::BF16, k);
        for n in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.61.embed_tokens.weight",
            "embeddings.word_embeddings.weight",
        ] {
            assert_eq!(d(n, &[8, 16], KeepAs::Q8_0), Action::Q8, "{n}");
            assert_eq!(d(n, &[8, 16], KeepAs::Source), Action::Keep, "{n}");
            assert_eq!(p.decide(n, &[8, 16], Dtype::BF16), Action::Keep, "{n}");
        }
        // Routers, norms, vectors, 3-D and integer tensors are never q8_0.
        for (n, s) in [
            ("model.layers.1.mlp.gate.weight", &[8, 16][..]),
            ("model.norm.weight", &[8, 16]),
            ("embeddings.LayerNorm.weight", &[16]),
            ("model.embed_tokens.weight", &[16]),
            ("model.embed_tokens.weight", &[2, 8, 16]),
        ] {
            assert_eq!(d(n, s, KeepAs::Q8_0), Action::Keep, "{n}");
        }
        assert_eq!(
            p.decide_keeping("lm_head.weight", &[8, 16], Dtype::I32, KeepAs::Q8_0),
            Action::Keep
        );
        // --include still quantizes to 4 bits, --exclude still keeps the source.
        let p = Policy {
            include: vec!["lm_head.weight".into()],
            exclude: vec!["model.embed_tokens.weight".into()],
            drop: Vec::new(),
        };
        let d = |n: &str| p.decide_keeping(n, &[8, 16], Dtype::F32, KeepAs::Q8_0);
        assert_eq!(d("lm_head.weight"), Action::Quantize);
        assert_eq!(d("model.embed_tokens.weight"), Action::Keep);
        assert_eq!("source".parse::<KeepAs>(), Ok(KeepAs::Source));
        assert_eq!(KeepAs::Q8_0.to_string().parse::<KeepAs>(), Ok(KeepAs::Q8_0));
        assert!("q4".parse::<KeepAs>().unwrap_err().contains("q8_0, source"));
    }

    #[test]
    fn head_q8_0_quantizes_the_embeddings_and_keeps_the_head_q8_0() {
        let p = Policy::default();
        let d = |n: &str, s: &[usize]| p.decide_keeping(n, s, Dtype::BF16, KeepAs::HeadQ8_0);
        for n in [
            "model.embed_tokens.weight",
            "embeddings.word_embeddings.weight",
        ] {
            assert_eq!(d(n, &[8, 16]), Action::Quantize, "{n}");
        }
        assert_eq!(d("lm_head.weight", &[8, 16]), Action::Q8);
        assert_eq!(d("model.mtp.lm_head.weight", &[8, 16]), Action::Q8);
        assert_eq!(d("model.norm.weight", &[16]), Action::Keep);
        assert_eq!(d("model.embed_tokens.weight", &[16]), Action::Keep);
        let excluded = Policy {
            exclude: vec!["model.embed_tokens.weight".into()],
            ..Policy::default()
        };
        let e = excluded.decide_keeping(
            "model.embed_tokens.weight",
            &[8, 16],
            Dtype::BF16,
            KeepAs::HeadQ8_0,
        );
        assert_eq!(e, Action::Keep);
        let name = KeepAs::HeadQ8_0.to_string();
        assert_eq!(
            (name.as_str(), name.parse()),
            ("head-q8_0", Ok(KeepAs::HeadQ8_0))
        );
    }

    #[test]
    fn exclude_beats_include_beats_default() {
        let p = Policy {
            include: vec!["lm_head.weight".into(), "*.q_proj.*".into()],
            exclude: vec!["*.layers.0.*".into()],
            drop: vec!["model.layers.9.*".into()],
        };
        assert_eq!(
            p.decide(
                "model.layers.9.self_attn.q_proj.weight",
                &[8, 16],
                Dtype::F32
            ),
            Action::Drop
        );
        assert_eq!(
            p.decide(
                "model.layers.1.mlp.down_proj.weight",
                &[8, 16],
                Dtype::F8_E4M3
            ),
            Action::Quantize
        );
        assert_eq!(
            p.decide("lm_head.weight", &[8, 16], Dtype::F32),
            Action::Quantize
        );
        assert_eq!(
            p.decide(
                "model.layers.0.self_attn.q_proj.weight",
                &[8, 16],
                Dtype::F32
            ),
            Action::Keep
        );
        assert_eq!(
            p.decide(
                "model.layers.1.self_attn.q_proj.weight",
                &[8, 16],
                Dtype::F32
            ),
            Action::Quantize
        );
        // An included vector still cannot be quantized.
        assert_eq!(p.decide("lm_head.weight", &[16], Dtype::F32), Action::Keep);
    }
}
