//! The `gguf` layout: one GGUF v3 file llama.cpp loads, for DeepSeek-V2 and -V3 checkpoints.
//!
//! Matrices the [`Policy`] quantizes are stored in ggml's Q4_0 or IQ4_NL (blocks of 32, f16
//! scale), with ggml's own encoder ([`BlockRule::Ggml`], bit for bit `llama-quantize`'s) or
//! tquant's per-block scale search ([`BlockRule::Search`]). The others follow llama.cpp's
//! converter: 1-D tensors, norms, the routers and `exp_probs_b` in F32; embeddings and the
//! output matrix in their own dtype (F16, BF16, F32), or Q8_0 when asked.
//!
//! - [`blocks`]: the ggml block encoders and decoders;
//! - [`file`](mod@file): the GGUF container and its atomic writer;
//! - [`deepseek`]: `deepseek2` metadata and tensor names;
//! - [`vocab`]: the tokenizer as llama.cpp reads it.

pub mod blocks;
pub mod deepseek;
mod error;
pub mod file;
mod repack;
pub mod vocab;

pub use blocks::{BlockRule, GgmlType};
pub use error::GgufError;

use crate::checkpoint::Checkpoint;
use crate::error::{ConvertError, Setting};
use crate::policy::{Action, KeepAs, Policy};
use crate::recipe::Overrides;
use deepseek::{DeepseekConfig, Source};
use file::{GgufFile, TensorInfo, Value};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tquant_formats::ScaleRule;

/// How the quantized matrices are stored: `q4_0` or `iq4_nl`, `+search` for tquant's scale
/// search, `+q8_0` for the kept matrices (embeddings, output) in Q8_0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufRecipe {
    /// Q4_0 or IQ4_NL.
    pub ty: GgmlType,
    /// How each block's scale is chosen.
    pub rule: BlockRule,
    /// Kept 2-D matrices in Q8_0 (else in their own dtype).
    pub keep_q8_0: bool,
}

impl Default for GgufRecipe {
    fn default() -> Self {
        Self {
            ty: GgmlType::Iq4Nl,
            rule: BlockRule::Ggml,
            keep_q8_0: false,
        }
    }
}

impl std::str::FromStr for GgufRecipe {
    type Err = GgufError;
    fn from_str(s: &str) -> Result<Self, GgufError> {
        let mut parts = s.split('+');
        let ty = match parts.next() {
            Some("q4_0") => GgmlType::Q4_0,
            Some("iq4_nl") => GgmlType::Iq4Nl,
            _ => return Err(GgufError::UnknownType(s.into())),
        };
        let mut r = Self {
            ty,
            ..Self::default()
        };
        for p in parts {
            match p {
                "search" => r.rule = BlockRule::Search,
                "q8_0" => r.keep_q8_0 = true,
                _ => return Err(GgufError::UnknownType(s.into())),
            }
        }
        Ok(r)
    }
}

impl std::fmt::Display for GgufRecipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.ty {
            GgmlType::Q4_0 => "q4_0",
            _ => "iq4_nl",
        })?;
        if self.rule == BlockRule::Search {
            f.write_str("+search")?;
        }
        if self.keep_q8_0 {
            f.write_str("+q8_0")?;
        }
        Ok(())
    }
}

/// Options of [`convert_gguf`].
#[derive(Debug, Clone, Default)]
pub struct GgufOptions {
    /// The quantized type and how it is chosen.
    pub recipe: GgufRecipe,
    /// Which tensors are quantized (the converter's).
    pub policy: Policy,
    /// A directory holding `tokenizer.json` (and `tokenizer_config.json`), when not the
    /// checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
}

impl GgufOptions {
    /// The options for `recipe` (`iq4_nl` when `None`) given the converter's settings a front
    /// end takes for every layout: ggml's types fix blocks of 32 with an f16 scale, so a block,
    /// a scale dtype, nu, calibration (`calibration`: the setting that asked for it) and the
    /// absmax rule are refused; the search rule is tquant's scale search. `keep_as` q8_0 is the
    /// recipe's `+q8_0`; source with a `+q8_0` recipe is refused.
    pub fn with_settings(
        recipe: Option<&str>,
        overrides: &Overrides,
        calibration: Option<Setting>,
        keep_as: Option<KeepAs>,
    ) -> Result<Self, GgufError> {
        let given = [
            (Setting::Block, overrides.block.is_some()),
            (Setting::ScaleDtype, overrides.scale_dtype.is_some()),
            (Setting::Nu, overrides.nu.is_some()),
        ];
        let refused = given.iter().filter(|g| g.1).map(|g| g.0).chain(calibration);
        if let Some(setting) = refused.into_iter().next() {
            return Err(ConvertError::GgufFixes {
                setting,
                value: None,
            }
            .into());
        }
        if overrides.scale_rule == Some(ScaleRule::Absmax) {
            let value = Some(ScaleRule::Absmax.to_string());
            let setting = Setting::ScaleRule;
            return Err(ConvertError::GgufFixes { setting, value }.into());
        }
        let mut recipe: GgufRecipe = recipe.unwrap_or("iq4_nl").parse()?;
        if overrides.scale_rule == Some(ScaleRule::Search) {
            recipe.rule = BlockRule::Search;
        }
        match keep_as {
            Some(KeepAs::Q8_0) => recipe.keep_q8_0 = true,
            Some(keep @ KeepAs::HeadQ8_0) => {
                let (setting, value) = (Setting::KeepAs, Some(keep.to_string()));
                return Err(ConvertError::GgufFixes { setting, value }.into());
            }
            Some(KeepAs::Source) if recipe.keep_q8_0 => {
                let recipe = recipe.to_string();
                return Err(ConvertError::KeepAsContradicts { recipe }.into());
            }
            _ => {}
        }
        Ok(Self {
            recipe,
            ..Self::default()
        })
    }
}

/// What [`convert_gguf`] wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GgufSummary {
    /// The file.
    pub output: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The recipe.
    pub recipe: String,
    /// Tensors written, by ggml type name.
    pub tensors: BTreeMap<String, usize>,
    /// Checkpoint tensors not written (multi-token prediction layers, `--drop`ped, buffers).
    pub skipped: usize,
}

impl std::fmt::Display for GgufSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<String> = self
            .tensors
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        writeln!(
            f,
            "wrote {} ({:.1} MB, {}): {} tensors ({}), {} checkpoint tensors not written",
            self.output.display(),
            self.bytes as f64 / 1e6,
            self.recipe,
            self.tensors.values().sum::<usize>(),
            types.join(", "),
            self.skipped
        )
    }
}

struct Planned {
    info: TensorInfo,
    source: Source,
}

fn is_f32_tensor(gguf: &str, ndim: usize) -> bool {
    ndim <= 1
        || gguf.ends_with("_norm.weight")
        || gguf.ends_with("ffn_gate_inp.weight")
        || !gguf.ends_with(".weight")
}

/// The metadata key recording how the codes were chosen (`ggml` or `search`).
pub const ROUNDING_KEY: &str = "tquant.quantization_rounding";

/// Converts the DeepSeek-V2/V3 checkpoint at `input` into the GGUF file `output`.
pub fn convert_gguf(
    input: &Path,
    output: &Path,
    opts: &GgufOptions,
) -> Result<GgufSummary, GgufError> {
    let ckpt = Checkpoint::open(input)?;
    let root = ckpt.root().to_path_buf();
    let cfg_path = root.join("config.json");
    let cfg = ckpt.config().cloned().ok_or_else(|| GgufError::Config {
        path: cfg_path.clone(),
        reason: "not found; the gguf layout reads the model's settings from it".into(),
    })?;
    let mut file = GgufFile::default();
    let c = deepseek::add_metadata(&mut file, &cfg, &cfg_path)?;
    file.set("general.alignment", Value::U32(file::ALIGNMENT as u32));
    file.set("general.quantization_version", Value::U32(2));
    // llama_ftype: MOSTLY_Q4_0 = 2, MOSTLY_IQ4_NL = 25.
    let ftype = if opts.recipe.ty == GgmlType::Q4_0 {
        2
    } else {
        25
    };
    file.set("general.file_type", Value::U32(ftype));
    // How this run chose the codes: ggml's own encoders, or tquant's scale search. Codes moved
    // from an already quantized input keep the rounding that input records.
    let rounding = match opts.recipe.rule {
        BlockRule::Ggml => "ggml",
        BlockRule::Search => "search",
    };
    file.set(ROUNDING_KEY, Value::Str(rounding.into()));
    if let Some(n) = cfg.get("_name_or_path").and_then(|v| v.as_str()) {
        file.set("general.name", Value::Str(n.to_string()));
    }
    let tok_dir = opts.tokenizer.clone().unwrap_or_else(|| root.clone());
    vocab::add_tokenizer(&mut file, &tok_dir, c.vocab)?;

    let (planned, skipped) = plan(&ckpt, &c, opts)?;
    file.tensors = planned.iter().map(|p| p.info.clone()).collect();
    let recipe = opts.recipe;
    let bytes = file.write(output, opts.force, |i, sink| {
        write_tensor(&ckpt, &root, &c, &planned[i], recipe, sink)
    })?;
    let mut tensors = BTreeMap::new();
    for p in &planned {
        *tensors.entry(p.info.ty.name().to_string()).or_insert(0) += 1;
    }
    Ok(GgufSummary {
        output: output.to_path_buf(),
        bytes,
        recipe: recipe.to_string(),
        tensors,
        skipped,
    })
}

fn tensor_err(root: &Path, tensor: &str, reason: String) -> GgufError {
    GgufError::Tensor {
        path: root.to_path_buf(),
        tensor: tensor.to_string(),
        reason,
    }
}

/// Every GGUF tensor with its type and source, in llama.cpp's order (embeddings, layers, output).
fn plan(
    ckpt: &Checkpoint,
    c: &DeepseekConfig,
    opts: &GgufOptions,
) -> Result<(Vec<Planned>, usize), GgufError> {
    let root = ckpt.root();
    let mut out: Vec<(u64, Planned)> = Vec::new();
    let mut experts: BTreeMap<(usize, String), BTreeMap<usize, String>> = BTreeMap::new();
    let mut skipped = 0;
    let order = |gguf: &str| -> u64 {
        match gguf.strip_prefix("blk.") {
            Some(r) => {
                1 + r
                    .split('.')
                    .next()
                    .and_then(|b| b.parse::<u64>().ok())
                    .unwrap_or(0)
            }
            None if gguf.starts_with("token_embd") => 0,
            None => u64::MAX,
        }
    };
    for name in ckpt.names() {
        let w = ckpt.get(name)?;
        let shape = w.shape().to_vec();
        let dtype = match &w {
            crate::Weight::Dense(t) => t.dtype,
            crate::Weight::Quantized(_) => safetensors::Dtype::BF16,
        };
        let action = opts.policy.decide(name, &shape, dtype);
        if matches!(action, Action::Skip | Action::Drop) {
            skipped += 1;
            continue;
        }
        let quantize = action == Action::Quantize;
        if let Some((bid, e, proj)) = deepseek::expert_of(name) {
            if bid >= c.layers {
                skipped += 1;
                continue;
            }
            experts
                .entry((bid, proj.to_string()))
                .or_default()
                .insert(e, name.to_string());
            continue;
        }
        if name.ends_with("self_attn.kv_b_proj.weight") {
            let Some(Some(attn)) = deepseek::gguf_name(&name.replace("kv_b_proj", "o_proj"), c)
            else {
                skipped += 1;
                continue;
            };
            let blk = attn.trim_end_matches("attn_output.weight");
            let want = [c.heads * (c.qk_nope + c.v_head), c.kv_lora];
            if shape != want {
                return Err(tensor_err(
                    root,
                    name,
                    format!("shape {shape:?}, config.json implies {want:?}"),
                ));
            }
            for (k, short, s) in [
                (true, "attn_k_b.weight", vec![c.heads, c.kv_lora, c.qk_nope]),
                (false, "attn_v_b.weight", vec![c.heads, c.v_head, c.kv_lora]),
            ] {
                let gname = format!("{blk}{short}");
                let ty = matrix_type(root, name, &gname, &s, quantize, dtype, opts)?;
                out.push((
                    order(&gname),
                    Planned {
                        info: TensorInfo {
                            name: gname,
                            shape: s,
                            ty,
                        },
                        source: Source::KvB {
                            name: name.to_string(),
                            k,
                        },
                    },
                ));
            }
            continue;
        }
        let gname = match deepseek::gguf_name(name, c) {
            Some(Some(g)) => g,
            Some(None) => {
                skipped += 1;
                continue;
            }
            None => {
                return Err(tensor_err(
                    root,
                    name,
                    "has no place in llama.cpp's deepseek2 (unknown name)".into(),
                ))
            }
        };
        // A q8_0 tensor of a tquant checkpoint (its embeddings and output by default) is
        // moved into Q8_0 bit for bit, whatever the recipe says of kept matrices.
        let q8_input = matches!(&w, crate::Weight::Quantized(v) if v.info.is_q8_0());
        let ty = if is_f32_tensor(&gname, shape.len()) {
            GgmlType::F32
        } else if q8_input && !quantize {
            let q8 = GgufOptions {
                recipe: GgufRecipe {
                    keep_q8_0: true,
                    ..opts.recipe
                },
                ..opts.clone()
            };
            matrix_type(root, name, &gname, &shape, false, dtype, &q8)?
        } else {
            matrix_type(root, name, &gname, &shape, quantize, dtype, opts)?
        };
        out.push((
            order(&gname),
            Planned {
                info: TensorInfo {
                    name: gname,
                    shape,
                    ty,
                },
                source: Source::Tensor(name.to_string()),
            },
        ));
    }
    for ((bid, proj), by_expert) in experts {
        let names: Vec<String> = by_expert.values().cloned().collect();
        if by_expert.keys().copied().ne(0..c.experts) {
            return Err(tensor_err(
                root,
                &names[0],
                format!(
                    "layer {bid} has {} {proj} experts, config.json says {}",
                    names.len(),
                    c.experts
                ),
            ));
        }
        let first = ckpt.get(&names[0])?;
        let s2 = first.shape().to_vec();
        for n in &names {
            if ckpt.get(n)?.shape() != s2.as_slice() {
                return Err(tensor_err(
                    root,
                    n,
                    format!("shape differs from expert 0's {s2:?}"),
                ));
            }
        }
        let dtype = match &first {
            crate::Weight::Dense(t) => t.dtype,
            crate::Weight::Quantized(_) => safetensors::Dtype::BF16,
        };
        let quantize = opts.policy.decide(&names[0], &s2, dtype) == Action::Quantize;
        let gname = deepseek::experts_name(bid, &proj);
        let shape = [vec![names.len()], s2].concat();
        let ty = matrix_type(root, &names[0], &gname, &shape, quantize, dtype, opts)?;
        out.push((
            order(&gname),
            Planned {
                info: TensorInfo {
                    name: gname,
                    shape,
                    ty,
                },
                source: Source::Experts(names),
            },
        ));
    }
    out.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.info.name.cmp(&b.1.info.name))
    });
    Ok((out.into_iter().map(|(_, p)| p).collect(), skipped))
}

/// The type of a 2-D or 3-D matrix: the recipe's for a quantized one, else Q8_0 if asked,
/// else its own float dtype.
fn matrix_type(
    root: &Path,
    name: &str,
    gname: &str,
    shape: &[usize],
    quantize: bool,
    dtype: safetensors::Dtype,
    opts: &GgufOptions,
) -> Result<GgmlType, GgufError> {
    let cols = *shape.last().unwrap_or(&0);
    let ty = if quantize {
        opts.recipe.ty
    } else if opts.recipe.keep_q8_0 {
        GgmlType::Q8_0
    } else {
        match dtype {
            safetensors::Dtype::F16 => GgmlType::F16,
            safetensors::Dtype::F32 | safetensors::Dtype::F64 => GgmlType::F32,
            _ => GgmlType::Bf16,
        }
    };
    if ty.block().0 > 1 && cols % blocks::QK != 0 {
        return Err(tensor_err(
            root,
            name,
            format!(
                "{gname} has rows of {cols} values; {} stores blocks of {} along a row",
                ty.name(),
                blocks::QK
            ),
        ));
    }
    Ok(ty)
}

fn write_tensor(
    ckpt: &Checkpoint,
    root: &Path,
    c: &DeepseekConfig,
    p: &Planned,
    recipe: GgufRecipe,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), GgufError>,
) -> Result<(), GgufError> {
    let encode = |values: &[f32]| -> Vec<u8> {
        let ty = p.info.ty;
        let cols = *p.info.shape.last().unwrap_or(&1);
        // Whole rows per task; blocks never cross a row.
        let chunk = cols.max(1) * 64;
        values
            .par_chunks(chunk)
            .map(|v| blocks::quantize(ty, recipe.rule, v))
            .collect::<Vec<_>>()
            .concat()
    };
    let read = |name: &str| -> Result<Vec<f32>, GgufError> {
        let v = match ckpt.get(name)? {
            crate::Weight::Dense(t) => t.to_f32()?,
            crate::Weight::Quantized(_) => {
                return Err(tensor_err(
                    root,
                    name,
                    format!(
                        "it is quantized; {} is made from it by a transposition or in another \
                         type, so convert it from the unquantized checkpoint (exclude it when \
                         quantizing)",
                        p.info.name
                    ),
                ))
            }
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(tensor_err(
                root,
                name,
                format!("value {} at {i} is not finite", v[i]),
            ));
        }
        Ok(v)
    };
    // A quantized input matrix in the type's own terms is moved, not rounded again.
    let moved = |name: &str| -> Result<Option<Vec<u8>>, GgufError> {
        let crate::Weight::Quantized(v) = ckpt.get(name)? else {
            return Ok(None);
        };
        if v.info.is_q8_0() && p.info.ty == GgmlType::Q8_0 {
            let mut out = Vec::new();
            for e in 0..v.info.experts() {
                out.extend(repack::repack_q8_0(&v.q8_matrix(e)?));
            }
            return Ok(Some(out));
        }
        if let Some(why) = repack::mismatch(&v, p.info.ty) {
            return Err(tensor_err(root, name, why));
        }
        let mut out = Vec::new();
        for e in 0..v.info.experts() {
            // Checks the parts against the shape before they are indexed.
            v.qmatrix(e)?;
            if let Some(m) = v.matrix(e) {
                out.extend(repack::repack(&m, 0..m.rows));
            }
        }
        Ok(Some(out))
    };
    match &p.source {
        Source::Tensor(n) => match moved(n)? {
            Some(bytes) => sink(&bytes),
            None => sink(&encode(&read(n)?)),
        },
        Source::KvB { name, k } => sink(&encode(&deepseek::split_kv_b(&read(name)?, c, *k))),
        Source::Experts(names) => names.iter().try_for_each(|n| match moved(n)? {
            Some(bytes) => sink(&bytes),
            None => sink(&encode(&read(n)?)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_parse_and_print() {
        for s in ["q4_0", "iq4_nl", "iq4_nl+search", "q4_0+search+q8_0"] {
            assert_eq!(s.parse::<GgufRecipe>().unwrap().to_string(), s);
        }
        let e = "q5_k".parse::<GgufRecipe>().unwrap_err();
        assert!(e.to_string().contains("q5_k"), "{e}");
        assert!("iq4_nl+best".parse::<GgufRecipe>().is_err());
    }
}

#[cfg(test)]
mod end_to_end;
