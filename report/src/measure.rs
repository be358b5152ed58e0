//! Quantizing a checkpoint in memory, one recipe at a time, with the converter's policy and
//! quantizer, and measuring the weight error and (with a runner) bits per byte.

use crate::table::{Chosen, Measured, NuSummary};
use crate::{ReportError, Result};
use std::collections::BTreeSet;
use std::sync::Arc;
use tquant_convert::calibration::Calibration;
use tquant_convert::quantize::{decide, quantize_tensor};
use tquant_convert::{Action, Checkpoint, ConvertOptions, NuChoice, Recipe, Weight};
use tquant_formats::fit::FitSampling;
use tquant_formats::{BlockSize, Codebook, QuantizedMatrix, ScaleDtype};
use tquant_model::{CheckpointSource, MemorySource, Packed, QuantTensor, TensorData};

/// One column of the report: a name, its recipe and the converter options that produce it.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The name as given (`sf4:nu=3.50` stays as written).
    pub name: String,
    /// The recipe the name means.
    pub recipe: Recipe,
    /// The converter options the recipe gives at the report's setting.
    pub opts: ConvertOptions,
}

impl Variant {
    /// The variant of `recipe` at `block` and `scale_dtype`, named by the recipe.
    pub fn new(recipe: &Recipe, block: BlockSize, scale_dtype: ScaleDtype) -> Result<Self> {
        Self::named(recipe.to_string(), recipe.clone(), block, scale_dtype)
    }

    fn named(
        name: String,
        recipe: Recipe,
        block: BlockSize,
        scale_dtype: ScaleDtype,
    ) -> Result<Self> {
        let mut opts = recipe.options(block, scale_dtype)?;
        // A measurement: the paper's fit on every value, not the converter's faster sample.
        opts.fit_sampling = FitSampling::Full;
        Ok(Self { name, recipe, opts })
    }
}

/// The names of `all`: every catalog format (SF4 at the paper's nu = 5), then SF4 with nu
/// fitted per tensor and with nu searched per tensor, then the per-tensor choice `auto` with
/// absmax and with searched scales.
pub fn all_names() -> Vec<String> {
    Recipe::all().iter().map(Recipe::to_string).collect()
}

/// Parses a list of recipes: `all`, or comma-separated recipe names (see [`Recipe`]; a
/// `custom:` entry takes the rest of the list).
pub fn parse_variants(
    list: &str,
    block: BlockSize,
    scale_dtype: ScaleDtype,
) -> Result<Vec<Variant>> {
    let names: Vec<String> = if list.trim() == "all" {
        all_names()
    } else {
        split_list(list)
    };
    if names.is_empty() {
        return Err(ReportError::EmptyFormatList);
    }
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .map(|name| {
            if !seen.insert(name.clone()) {
                return Err(ReportError::DuplicateFormat { name });
            }
            let (recipe, block, scale_dtype) = match fp4_preset(&name) {
                Some((text, b, d)) => (text.parse::<Recipe>()?, b, d),
                None => (name.parse::<Recipe>()?, block, scale_dtype),
            };
            if recipe.gptq {
                return Err(ReportError::CalibratedInList { name });
            }
            Variant::named(name.clone(), recipe, block, scale_dtype)
                .map_err(|e| e.context(format!("'{name}'")))
        })
        .collect()
}

/// The FP4 standards as rows, each at its own block and scale dtype whatever the report's:
/// `nvfp4` (E2M1, blocks of 16, E4M3 scales under an f32 tensor scale), `nvfp4+4over6`,
/// `mxfp4` (blocks of 32, E8M0 scales by the OCP floor rule) and `mxfp4+rceil`. The recipe
/// each stands for, with its block and scale dtype; `None` for any other name.
pub fn fp4_preset(name: &str) -> Option<(&'static str, BlockSize, ScaleDtype)> {
    let nv = (BlockSize::Elements(16), ScaleDtype::E4m3);
    let mx = (BlockSize::Elements(32), ScaleDtype::E8m0);
    let (recipe, (block, dtype)) = match name {
        "nvfp4" => ("e2m1", nv),
        "nvfp4+4over6" => ("e2m1+4over6", nv),
        "mxfp4" => ("e2m1", mx),
        "mxfp4+rceil" => ("e2m1+rceil", mx),
        _ => return None,
    };
    Some((recipe, block, dtype))
}

/// Each variant followed by its calibrated twin (same options, with the calibration; named
/// `gptq:nf4`, or `auto+gptq` for the per-matrix choice).
pub fn with_calibrated_twins(variants: Vec<Variant>, cal: &Arc<Calibration>) -> Vec<Variant> {
    variants
        .into_iter()
        .flat_map(|v| {
            let mut c = v.clone();
            c.name = calibrated_variant_name(&v.name);
            c.recipe = v.recipe.with_gptq();
            c.opts.calibration = Some(cal.clone());
            [v, c]
        })
        .collect()
}

/// The report's name of a variant quantized with the calibration: `gptq:nf4`, `gptq:nf4+search`;
/// `auto+gptq`, `auto+search+gptq` for the per-matrix choice.
pub fn calibrated_variant_name(name: &str) -> String {
    if name.starts_with("auto") {
        format!("{name}+gptq")
    } else {
        format!("gptq:{name}")
    }
}

/// Splits on commas, except that a `custom:` entry takes the rest of the list.
fn split_list(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        if rest.starts_with("custom:") {
            out.push(rest.to_string());
            break;
        }
        let (head, tail) = rest.split_once(',').unwrap_or((rest, ""));
        if !head.trim().is_empty() {
            out.push(head.trim().to_string());
        }
        rest = tail.trim();
    }
    out
}

/// A model's weights quantized with one variant, in memory.
#[derive(Debug)]
pub struct Quantized {
    /// What the variant measured on the weights.
    pub measured: Measured,
    /// Quantized tensors by checkpoint name, ready to put in front of the checkpoint.
    pub tensors: Vec<(String, TensorData)>,
}

/// Quantizes every tensor the converter's policy quantizes and measures the error.
pub fn quantize_checkpoint(ckpt: &Checkpoint, variant: &Variant) -> Result<Quantized> {
    let opts = &variant.opts;
    let (mut sq_err, mut sq_w) = (0.0f64, 0.0f64);
    let (mut weights, mut side_bytes) = (0usize, 0usize);
    // Scales, and learned tables: what a weight costs besides its code.
    let mut codebooks: Vec<Vec<f32>> = Vec::new();
    let mut chosen = std::collections::BTreeMap::<String, usize>::new();
    let mut nus = Vec::new();
    let mut tensors = Vec::new();
    let names: Vec<String> = ckpt.names().map(str::to_string).collect();
    for name in &names {
        let w = ckpt.get(name)?;
        let view = match w {
            Weight::Dense(t) => t,
            Weight::Quantized(_) => {
                return Err(ReportError::AlreadyQuantized {
                    path: ckpt.root().to_path_buf(),
                    tensor: name.clone(),
                })
            }
        };
        if decide(name, view.shape, view.dtype, opts) != Action::Quantize {
            continue;
        }
        let values = view.to_f32()?;
        let q = quantize_tensor(name, &values, view.shape, view.dtype, opts)?;
        let info = &q.info;
        let (rows, cols) = (info.rows(), info.cols());
        let (code_len, scale_len) = (
            q.codes.len() / info.experts(),
            q.scales.len() / info.experts(),
        );
        for (e, m) in info.matrices.iter().enumerate() {
            let deq = if m.row_tables.is_empty() {
                let cb =
                    Codebook::new(m.codebook.clone()).map_err(|source| ReportError::Codebook {
                        tensor: name.clone(),
                        source,
                    })?;
                let qm = QuantizedMatrix {
                    rows,
                    cols,
                    block: info.block,
                    scale_dtype: info.scale_dtype,
                    codes: q.codes[e * code_len..(e + 1) * code_len].to_vec(),
                    scales: q.scales[e * scale_len..(e + 1) * scale_len].to_vec(),
                };
                qm.dequantize(&cb)
            } else {
                // `learned_row`: each row with its own table (f16 values, stored with it).
                side_bytes += m.row_tables.len() * 2;
                q.view()
                    .dequantize_matrix(e)
                    .expect("quantizer output codes index their tables")
            };
            for (&a, &b) in values[e * rows * cols..(e + 1) * rows * cols]
                .iter()
                .zip(&deq)
            {
                let d = b as f64 - a as f64;
                sq_err += d * d;
                sq_w += a as f64 * a as f64;
            }
            if opts.learned && !opts.row_tables {
                // The matrix's own table is stored with it (f32 values).
                side_bytes += m.codebook.len() * 4;
            }
            if m.global_scale.is_some() {
                // NVFP4's f32 tensor scale (E4M3 block scales).
                side_bytes += 4;
            }
            if !m.codebook.is_empty() && !codebooks.contains(&m.codebook) {
                codebooks.push(m.codebook.clone());
            }
            // A table per row: each matrix's first row's table stands for its tables in the
            // area model (every row's table is 16 values of the same kind).
            let first_row = m.row_tables.get(..1usize << bits_of(info));
            if let Some(t) = first_row.filter(|t| !codebooks.iter().any(|c| c[..] == t[..])) {
                codebooks.push(t.to_vec());
            }
            // The format's family: `sf4:nu=23.4` counts as sf4.
            let family = m.format.split(':').next().unwrap_or(&m.format);
            *chosen.entry(family.to_string()).or_default() += 1;
            if let (Some(NuChoice::Fit | NuChoice::Search), Some(nu)) = (opts.nu, m.nu) {
                nus.push(nu);
            }
        }
        weights += values.len();
        side_bytes += q.scales.len();
        tensors.push((name.clone(), model_tensor(&q)));
    }
    if weights == 0 {
        return Err(ReportError::NothingToQuantize {
            path: ckpt.root().to_path_buf(),
        });
    }
    let bits = opts.bits();
    Ok(Quantized {
        measured: Measured {
            format: variant.name.clone(),
            bits,
            codebooks,
            bits_per_weight: (bits as f64 * weights as f64 + 8.0 * side_bytes as f64)
                / weights as f64,
            nmse: if sq_w > 0.0 { sq_err / sq_w } else { 0.0 },
            bits_per_byte: None,
            nu: NuSummary::of(nus).map(|mut n| {
                n.searched = opts.nu == Some(NuChoice::Search);
                n
            }),
            chosen: chosen
                .into_iter()
                .map(|(format, matrices)| Chosen { format, matrices })
                .collect(),
            scale_rule: opts.scale_rule,
        },
        tensors,
    })
}

/// The model's view of a quantized tensor: same codes and scales, tables padded to 16 entries
/// (3-bit codes never index past 8).
pub fn model_tensor(q: &tquant_convert::QuantizedTensor) -> TensorData {
    let tables = q
        .info
        .matrices
        .iter()
        .map(|m| {
            let mut t = m.codebook.clone();
            t.resize(16, 0.0);
            Arc::<[f32]>::from(t)
        })
        .collect();
    TensorData::Quantized(QuantTensor {
        shape: q.info.shape.clone(),
        block: q.info.block,
        scale_dtype: q.info.scale_dtype,
        packed: Packed::owned(q.codes.clone(), q.scales.clone()),
        tables,
        row_tables: row_tables(q),
    })
}

/// Entries of each of a tensor's tables.
fn bits_of(info: &tquant_convert::QuantInfo) -> u32 {
    info.bits
}

/// `learned_row`: every matrix's row tables, for the model (`None` for a table per matrix).
fn row_tables(q: &tquant_convert::QuantizedTensor) -> Option<Arc<tquant_model::RowTables>> {
    let m = &q.info.matrices;
    if m.first()?.row_tables.is_empty() {
        return None;
    }
    let all: Vec<f32> = m
        .iter()
        .flat_map(|m| m.row_tables.iter().copied())
        .collect();
    let t = tquant_model::RowTables::new(&all, 1 << q.info.bits)
        .expect("learned tables are finite and of 2^bits values");
    Some(Arc::new(t))
}

/// Bits per byte of the checkpoint with `quantized` tensors in front of the originals, on `ids`
/// scored in windows, whose scored tokens cover `bytes` bytes of text.
pub fn bits_per_byte(
    base: &CheckpointSource,
    config: &tquant_model::Config,
    quantized: Vec<(String, TensorData)>,
    ids: &[u32],
    window: usize,
    bytes: usize,
) -> Result<f64> {
    let mut src = MemorySource::over(base);
    for (name, t) in quantized {
        src.insert(name, t);
    }
    let model = tquant_model::Model::from_source(config.clone(), &src, Default::default())?;
    let score = tquant_model::eval::score_windows(&model, ids, window, usize::MAX)?;
    Ok(score.bits / bytes as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tquant_formats::ScaleRule;

    #[test]
    fn format_lists_parse_with_fixed_and_fitted_nu() {
        let v = parse_variants(
            "nf4, sf4,sf4_fit,sf4:nu=3",
            BlockSize::Elements(64),
            ScaleDtype::F32,
        )
        .unwrap();
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["nf4", "sf4", "sf4_fit", "sf4:nu=3"]);
        assert_eq!(v[1].opts.nu, Some(NuChoice::Fixed(5.0)));
        assert_eq!(
            v[1].opts.format.codebook().values(),
            tquant_formats::catalog::SF4_NU5
        );
        assert_eq!(v[2].opts.nu, Some(NuChoice::Fit));
        assert_eq!(v[3].opts.nu, Some(NuChoice::Fixed(3.0)));
        assert!(v.iter().all(|v| v.opts.scale_dtype == ScaleDtype::F32));
    }

    #[test]
    fn all_has_every_catalog_format_and_the_per_tensor_choices() {
        let v = parse_variants("all", BlockSize::Elements(64), ScaleDtype::F16).unwrap();
        assert_eq!(v.len(), tquant_formats::catalog::NAMES.len() + 4);
        let tail: Vec<&str> = v[v.len() - 4..].iter().map(|v| v.name.as_str()).collect();
        assert_eq!(tail, ["sf4_fit", "sf4_search", "auto", "auto+search"]);
        let auto = &v[v.len() - 2].opts;
        assert_eq!(
            auto.auto.as_ref().unwrap().name(),
            "auto:nf4,sf4_search,apot4_sp,e2m1_sp,int4,int4_full"
        );
        assert_eq!(auto.scale_rule, ScaleRule::Absmax);
        assert_eq!(v[v.len() - 1].opts.scale_rule, ScaleRule::Search);
        assert_eq!(v[v.len() - 3].opts.nu, Some(NuChoice::Search));
    }

    #[test]
    fn search_suffix_and_auto_lists_parse() {
        let v = parse_variants(
            "nf4+search,auto:apot4_sp/int4_full+search,sf4_search",
            BlockSize::Elements(64),
            ScaleDtype::F16,
        )
        .unwrap();
        assert_eq!(v[0].opts.format.name(), "nf4");
        assert_eq!(v[0].opts.scale_rule, ScaleRule::Search);
        assert_eq!(
            v[1].opts.auto.as_ref().unwrap().name(),
            "auto:apot4_sp,int4_full"
        );
        assert_eq!(v[1].opts.scale_rule, ScaleRule::Search);
        assert_eq!(v[2].opts.scale_rule, ScaleRule::Absmax);
        assert!(parse_variants("auto:nf4/nf3", BlockSize::Row, ScaleDtype::F32).is_err());
        assert!(parse_variants("nf4+searched", BlockSize::Row, ScaleDtype::F32).is_err());
    }

    #[test]
    fn custom_takes_the_rest_of_the_list_and_bad_names_fail() {
        let v = parse_variants("int4,custom:-1,0,0.5,1", BlockSize::Row, ScaleDtype::F32).unwrap();
        assert_eq!(v[1].name, "custom:-1,0,0.5,1");
        assert!(parse_variants("nf5", BlockSize::Row, ScaleDtype::F32).is_err());
        assert!(parse_variants("nf4,nf4", BlockSize::Row, ScaleDtype::F32).is_err());
        assert!(parse_variants(" ", BlockSize::Row, ScaleDtype::F32).is_err());
    }

    #[test]
    fn fp4_presets_pin_their_block_scale_dtype_and_rule() {
        let v = parse_variants(
            "nvfp4,nvfp4+4over6,mxfp4,mxfp4+rceil,e2m1+rceil",
            BlockSize::Elements(64),
            ScaleDtype::F16,
        )
        .unwrap();
        let got: Vec<_> = v
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.opts.format.name(),
                    v.opts.block,
                    v.opts.scale_dtype,
                    v.opts.scale_rule,
                )
            })
            .collect();
        let (nv, mx) = (BlockSize::Elements(16), BlockSize::Elements(32));
        assert_eq!(
            got,
            [
                ("nvfp4", "e2m1", nv, ScaleDtype::E4m3, ScaleRule::Absmax),
                (
                    "nvfp4+4over6",
                    "e2m1",
                    nv,
                    ScaleDtype::E4m3,
                    ScaleRule::FourOverSix
                ),
                ("mxfp4", "e2m1", mx, ScaleDtype::E8m0, ScaleRule::Absmax),
                (
                    "mxfp4+rceil",
                    "e2m1",
                    mx,
                    ScaleDtype::E8m0,
                    ScaleRule::Rceil
                ),
                (
                    "e2m1+rceil",
                    "e2m1",
                    BlockSize::Elements(64),
                    ScaleDtype::F16,
                    ScaleRule::Rceil
                ),
            ]
        );
        assert!(parse_variants("nvfp4+search", BlockSize::Row, ScaleDtype::F32).is_err());
    }
}
