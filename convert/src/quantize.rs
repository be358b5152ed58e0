//! Quantizing one tensor in memory: Student-t fit, the codebook it selects, block quantization
//! and packing in the chosen layout. The converter calls this per matrix; `tquant report` calls
//! [`quantize_tensor`] to quantize a model without files.

use crate::auto::AutoSpec;
use crate::calibration::{Calibration, StagedCalibration};
use crate::dtype::count_non_finite;
use crate::layouts;
use crate::policy::{Action, Policy};
use crate::quantized::{FitInfo, Layout, MatrixInfo, QuantInfo, QuantizedTensor, FORMAT_VERSION};
use crate::ConvertError;
use rayon::prelude::*;
use safetensors::Dtype;
use std::sync::Arc;
use tquant_formats::block::ScaleRule;
use tquant_formats::layouts::MXFP4_BLOCK;
use tquant_formats::nu_search::search_nu_min_error;
use tquant_formats::select::SquaredError;
use tquant_formats::{
    fit_block_standardized_with, fit_student_t_with, BlockQuantizer, BlockSize, FitSampling,
    Format, FormatError, ScaleDtype, TFit,
};

/// How the degrees of freedom of a Student Float codebook are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NuChoice {
    /// Per tensor (per expert): maximum-likelihood fit on block-standardised values.
    Fit,
    /// Per tensor (per expert): the nu whose codebook gives the matrix the least squared error
    /// (a 1-D search, `tquant_formats::nu_search`); slower than the fit, and never worse on the
    /// matrix itself.
    Search,
    Fixed(f64),
}

/// Everything that decides how a checkpoint is converted.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertOptions {
    /// The format; for Student Float with [`NuChoice::Fit`] only its bit width matters.
    pub format: Format,
    /// `Some` exactly for Student Float formats.
    pub nu: Option<NuChoice>,
    pub block: BlockSize,
    pub scale_dtype: ScaleDtype,
    pub layout: Layout,
    pub policy: Policy,
    /// How each block's scale is chosen (tquant's layout only; bnb and mxfp4 fix their own).
    pub scale_rule: ScaleRule,
    /// `--format auto[:LIST]`: the candidates chosen from per matrix; `format` is then the first
    /// candidate's table (only its bit width matters) and `nu` is `None`.
    pub auto: Option<AutoSpec>,
    /// Input statistics from running the model over calibration text: matrices they cover are
    /// quantized with GPTQ ([`crate::calibration`]).
    pub calibration: Option<Arc<Calibration>>,
    /// The same, collected a group of layers at a time during the conversion (a model whose
    /// statistics do not fit in memory at once). At most one of the two is set.
    pub staged_calibration: Option<StagedCalibration>,
    /// Which values the Student-t fits see: a seeded sample of whole blocks (the converter's
    /// default, [`FitSampling::DEFAULT`]) or every value (the paper's fit, as the report uses).
    pub fit_sampling: FitSampling,
}

impl Default for ConvertOptions {
    /// sf4 with fitted nu, blocks of 64, f16 scales, tquant's layout, the default policy.
    fn default() -> Self {
        Self {
            format: "sf4".parse().expect("sf4 is in the catalog"),
            nu: Some(NuChoice::Fit),
            block: BlockSize::Elements(64),
            scale_dtype: ScaleDtype::F16,
            layout: Layout::Tquant,
            policy: Policy::default(),
            scale_rule: ScaleRule::Absmax,
            auto: None,
            calibration: None,
            staged_calibration: None,
            fit_sampling: FitSampling::DEFAULT,
        }
    }
}

fn opt_err(e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Options(e.to_string())
}

impl ConvertOptions {
    /// Options from command-line strings; `None` takes the layout's default: sf4 / fitted nu /
    /// block 64 / f16 for tquant, nf4 / 64 / f32 absmax for bnb, e2m1 / 32 / e8m0 for mxfp4.
    /// A `nu` for a format that has none, or settings a layout cannot store, are errors.
    pub fn from_args(
        format: Option<&str>,
        nu: Option<&str>,
        block: Option<&str>,
        scale_dtype: Option<&str>,
        layout: Layout,
        policy: Policy,
    ) -> Result<Self, ConvertError> {
        let (def_format, def_block, def_scale) = match layout {
            Layout::Tquant => ("sf4", "64", "f16"),
            Layout::Bnb => ("nf4", "64", "f32"),
            Layout::Mxfp4 => ("e2m1", "32", "e8m0"),
        };
        let format_str = format.unwrap_or(def_format);
        if crate::auto::is_auto(format_str) {
            let (block, scale) = (block.unwrap_or(def_block), scale_dtype.unwrap_or(def_scale));
            return crate::auto::options(format_str, nu, block, scale, layout, policy);
        }
        let format: Format = format_str.parse().map_err(opt_err)?;
        let block: BlockSize = block.unwrap_or(def_block).parse().map_err(opt_err)?;
        let scale_dtype: ScaleDtype = scale_dtype.unwrap_or(def_scale).parse().map_err(opt_err)?;
        let nu = match (format.nu(), nu) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(opt_err(format!(
                    "--nu applies to Student Float formats (sf4, sf3), not '{format}'"
                )))
            }
            // "sf4:nu=3.5" fixes nu; plain "sf4" fits it unless --nu says otherwise.
            (Some(named), None) if format_str.contains(':') => Some(NuChoice::Fixed(named)),
            (Some(_), None) => Some(NuChoice::Fit),
            (Some(_), Some(_)) if format_str.contains(':') => {
                return Err(opt_err(format!(
                    "'{format_str}' already fixes nu; drop --nu or write the format as sf{}",
                    format.bits()
                )))
            }
            (Some(_), Some("fit")) => Some(NuChoice::Fit),
            (Some(_), Some("search")) => Some(NuChoice::Search),
            (Some(_), Some(v)) => {
                let nu: f64 = v.parse().map_err(|_| {
                    opt_err(format!("--nu '{v}' is not a number, 'fit' or 'search'"))
                })?;
                Format::student_float(format.bits(), nu).map_err(opt_err)?;
                Some(NuChoice::Fixed(nu))
            }
        };
        let format = match nu {
            Some(NuChoice::Fixed(v)) => Format::student_float(format.bits(), v).map_err(opt_err)?,
            _ => format,
        };
        let opts = Self {
            format,
            nu,
            block,
            scale_dtype,
            layout,
            policy,
            scale_rule: ScaleRule::Absmax,
            auto: None,
            calibration: None,
            staged_calibration: None,
            fit_sampling: FitSampling::DEFAULT,
        };
        opts.validate()?;
        Ok(opts)
    }

    /// The same options with another scale rule (`search` needs tquant's layout).
    pub fn with_scale_rule(mut self, rule: ScaleRule) -> Result<Self, ConvertError> {
        self.scale_rule = rule;
        self.validate()?;
        Ok(self)
    }

    /// Checks that the layout can store this format, block and scale dtype.
    pub fn validate(&self) -> Result<(), ConvertError> {
        crate::calibration::validate(self)?;
        if self.scale_rule != ScaleRule::Absmax && self.layout != Layout::Tquant {
            return Err(opt_err(format!(
                "--scale-rule {} needs --layout tquant ({} fixes its own scale rule)",
                self.scale_rule,
                self.layout.name()
            )));
        }
        if let Some(spec) = &self.auto {
            let q = BlockQuantizer {
                block: self.block,
                scale_dtype: self.scale_dtype,
            };
            return spec.validate(self.layout, &q);
        }
        match self.layout {
            Layout::Tquant => BlockQuantizer {
                block: self.block,
                scale_dtype: self.scale_dtype,
            }
            .check(self.format.codebook())
            .map_err(opt_err),
            Layout::Bnb => {
                let ok_block = matches!(self.block, BlockSize::Elements(n) if layouts::BNB_BLOCKS.contains(&n));
                // Name only what is wrong, with what bitsandbytes supports in its place.
                let mut wrong = Vec::new();
                if self.format.name() != "nf4" {
                    wrong.push(format!("--format nf4 only (got {})", self.format));
                }
                if self.scale_dtype != ScaleDtype::F32 {
                    wrong.push(format!("f32 scales only (got {})", self.scale_dtype));
                }
                if !ok_block {
                    wrong.push(format!(
                        "--block {} only (got {})",
                        layouts::BNB_BLOCKS.map(|b| b.to_string()).join(", "),
                        self.block
                    ));
                }
                if !wrong.is_empty() {
                    return Err(opt_err(format!(
                        "--layout bnb (bitsandbytes NF4) supports {}; use --layout tquant for \
                         other formats",
                        wrong.join("; ")
                    )));
                }
                Ok(())
            }
            Layout::Mxfp4 => {
                if self.format.name() != "e2m1"
                    || self.scale_dtype != ScaleDtype::E8m0
                    || self.block != BlockSize::Elements(MXFP4_BLOCK)
                {
                    return Err(opt_err(format!(
                        "--layout mxfp4 stores e2m1 with e8m0 scales and blocks of {MXFP4_BLOCK}, not {} / {} / block {}",
                        self.format, self.scale_dtype, self.block
                    )));
                }
                Ok(())
            }
        }
    }

    /// Bits per code of the chosen format.
    pub fn bits(&self) -> u32 {
        self.format.bits()
    }
}

/// The block-standardised fit (which picks the codebook) sees about this many values of a
/// matrix: whole blocks, one drawn from each of equal strata of the matrix
/// ([`FitSampling::DEFAULT`]). `docs/fit.md` has the measurements: at this size the sf4 table
/// of the sampled nu is within a few thousandths of the table of the fit on every value, and the
/// fit costs a small part of the quantization.
pub const FIT_SAMPLES: usize = tquant_formats::fit::FIT_SAMPLE_VALUES;
/// The whole-matrix fit is only recorded (the paper's per-tensor profile), and costs about three
/// times as much per value (its heavier tails take more EM steps): a smaller sample, whose sf4
/// table is within 0.02 of the full fit's on the matrices of `docs/fit.md`.
pub const PROFILE_FIT_SAMPLES: usize = 1 << 13;

/// The block-standardised fit the converter picks a Student Float table with, on the sample of
/// [`FitSampling::DEFAULT`] (a function of the matrix alone, whatever the thread count).
pub fn fit_for_codebook(values: &[f32], block: usize) -> TFit {
    fit_for_codebook_with(values, block, FitSampling::DEFAULT)
}

/// [`fit_for_codebook`] on the values `sampling` picks.
pub fn fit_for_codebook_with(values: &[f32], block: usize, sampling: FitSampling) -> TFit {
    fit_block_standardized_with(values, block, sampling)
}

/// The whole-matrix fit the converter records, on a sample of [`PROFILE_FIT_SAMPLES`] values.
pub fn fit_for_profile(values: &[f32], block: usize) -> TFit {
    let sampling = match FitSampling::DEFAULT {
        FitSampling::Blocks { seed, .. } => FitSampling::Blocks {
            values: PROFILE_FIT_SAMPLES,
            seed,
        },
        FitSampling::Full => FitSampling::Full,
    };
    fit_student_t_with(values, block, sampling)
}

/// Whole blocks of `values` (blocks of `block` elements), evenly spaced, about `budget` values
/// in all; the input itself when it is smaller. (The converter's fits sample with
/// [`tquant_formats::fit::sample_blocks`], whose strata do not line up with the rows.)
pub fn fit_sample(values: &[f32], block: usize, budget: usize) -> std::borrow::Cow<'_, [f32]> {
    let block = block.max(1);
    let blocks = values.len() / block;
    let want = (budget / block).max(1);
    if values.len() <= budget || blocks <= want {
        return std::borrow::Cow::Borrowed(values);
    }
    let mut out = Vec::with_capacity(want * block);
    for i in 0..want {
        let b = i * blocks / want;
        out.extend_from_slice(&values[b * block..(b + 1) * block]);
    }
    std::borrow::Cow::Owned(out)
}

/// Rounds a fitted nu to 3 decimals so the format name (`sf4:nu=4.237`) rebuilds the exact
/// codebook stored in the file.
pub fn round_nu(nu: f64) -> f64 {
    (nu * 1000.0).round() / 1000.0
}

/// One quantized matrix: its description and bytes in the options' layout.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrixOut {
    pub info: MatrixInfo,
    pub codes: Vec<u8>,
    pub scales: Vec<u8>,
}

/// Fits (when asked), picks the codebook and quantizes one row-major `[rows, cols]` matrix.
pub fn quantize_matrix(
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
) -> Result<QuantizedMatrixOut, FormatError> {
    if let Some(spec) = &opts.auto {
        return crate::auto::quantize_matrix_auto(values, rows, cols, opts, spec, &SquaredError)
            .map(|m| m.out);
    }
    let block_len = opts.block.len_for(cols);
    let (format, fit, fit_tensor) = match opts.nu {
        Some(NuChoice::Fit) => {
            let fit = fit_for_codebook_with(values, block_len, opts.fit_sampling);
            let whole = fit_for_profile(values, block_len);
            let format = Format::student_float(opts.format.bits(), round_nu(fit.nu))?;
            (format, Some(FitInfo::from(fit)), Some(FitInfo::from(whole)))
        }
        Some(NuChoice::Search) => {
            let q = BlockQuantizer {
                block: opts.block,
                scale_dtype: opts.scale_dtype,
            };
            let bits = opts.format.bits();
            let best = search_nu_min_error(values, rows, cols, bits, &q, opts.scale_rule)?;
            let format = Format::student_float(bits, round_nu(best.nu))?;
            let whole = fit_for_profile(values, block_len);
            (format, None, Some(FitInfo::from(whole)))
        }
        _ => (opts.format.clone(), None, None),
    };
    let cb = format.codebook();
    let (codes, scales) = match opts.layout {
        Layout::Mxfp4 => layouts::mxfp4(values, rows, cols)?,
        Layout::Tquant => {
            let q = BlockQuantizer {
                block: opts.block,
                scale_dtype: opts.scale_dtype,
            }
            .quantize_with(cb, values, rows, cols, opts.scale_rule)?;
            (q.codes, q.scales)
        }
        Layout::Bnb => layouts::bnb_quantize(values, block_len)?,
    };
    Ok(QuantizedMatrixOut {
        info: MatrixInfo {
            format: format.name().to_string(),
            nu: format.nu(),
            fit,
            fit_tensor,
            codebook: cb.values().to_vec(),
        },
        codes,
        scales,
    })
}

/// The description of a tensor of `shape` quantized with `opts`, before its matrices exist.
pub fn plan_info(shape: &[usize], dtype: Dtype, opts: &ConvertOptions) -> QuantInfo {
    let cols = shape[shape.len() - 1];
    let experts = if shape.len() == 3 { shape[0] } else { 1 };
    let matrices = if opts.layout == Layout::Bnb {
        1
    } else {
        experts
    };
    QuantInfo {
        version: FORMAT_VERSION,
        layout: opts.layout,
        format: match (&opts.auto, opts.nu) {
            (Some(spec), _) => spec.name(),
            (None, Some(NuChoice::Fit | NuChoice::Search)) => format!("sf{}", opts.bits()),
            _ => opts.format.name().to_string(),
        },
        bits: opts.bits(),
        shape: shape.to_vec(),
        dtype: dtype.to_string(),
        block: opts.block.len_for(cols),
        scale_dtype: opts.scale_dtype,
        scale_rule: Some(opts.scale_rule),
        calibration: None,
        matrices: vec![
            MatrixInfo {
                format: opts.format.name().to_string(),
                nu: opts.format.nu(),
                fit: None,
                fit_tensor: None,
                codebook: opts.format.codebook().values().to_vec(),
            };
            matrices
        ],
        nested_absmax_block: None,
    }
}

/// Policy decision for a tensor under these options.
pub fn decide(name: &str, shape: &[usize], dtype: Dtype, opts: &ConvertOptions) -> Action {
    opts.policy.decide(name, shape, dtype)
}

/// Quantizes one tensor (2-D, or 3-D `[experts, rows, cols]` with each expert on its own
/// scales and fitted codebook), whatever the policy says: callers decide with [`decide`].
/// NaN or infinite values are refused.
pub fn quantize_tensor(
    name: &str,
    values: &[f32],
    shape: &[usize],
    dtype: Dtype,
    opts: &ConvertOptions,
) -> Result<QuantizedTensor, ConvertError> {
    let invalid = |reason: String| ConvertError::Invalid {
        tensor: name.to_string(),
        reason,
    };
    if !(2..=3).contains(&shape.len()) || shape.contains(&0) {
        return Err(invalid(format!(
            "shape {shape:?}: only 2-D matrices and 3-D expert tensors are quantized"
        )));
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(values.len()) {
        return Err(invalid(format!(
            "{} values do not fill shape {shape:?}",
            values.len()
        )));
    }
    let bad = count_non_finite(values);
    if bad > 0 {
        return Err(invalid(format!(
            "{bad} NaN or infinite values (of {}); refusing to quantize",
            values.len()
        )));
    }
    let mut info = plan_info(shape, dtype, opts);
    crate::calibration::annotate(&mut info, name, opts);
    let fmt_err = |err| ConvertError::Format {
        tensor: name.to_string(),
        err,
    };
    let (rows, cols) = (info.rows(), info.cols());
    if opts.layout == Layout::Bnb {
        // bitsandbytes blocks run over the flattened tensor, experts included.
        let m = quantize_matrix(values, 1, values.len(), opts).map_err(fmt_err)?;
        info.matrices = vec![m.info];
        return Ok(QuantizedTensor {
            name: name.to_string(),
            info,
            codes: m.codes,
            scales: m.scales,
        });
    }
    layouts::check_matrix(opts, rows, cols).map_err(invalid)?;
    let per = rows * cols;
    let outs = values
        .par_chunks(per)
        .enumerate()
        .map(|(e, m)| {
            let expert = (shape.len() == 3).then_some(e);
            crate::calibration::quantize_matrix_for(name, expert, m, rows, cols, opts)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(fmt_err)?;
    let mut codes = Vec::with_capacity(info.code_bytes());
    let mut scales = Vec::with_capacity(info.scale_bytes());
    info.matrices = outs
        .into_iter()
        .map(|m| {
            codes.extend_from_slice(&m.codes);
            scales.extend_from_slice(&m.scales);
            m.info
        })
        .collect();
    Ok(QuantizedTensor {
        name: name.to_string(),
        info,
        codes,
        scales,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_sample_takes_whole_blocks_evenly() {
        let x: Vec<f32> = (0..(FIT_SAMPLES * 4)).map(|i| i as f32).collect();
        let s = fit_sample(&x, 64, FIT_SAMPLES);
        assert_eq!(s.len(), FIT_SAMPLES);
        // Every 4th block, each whole and in order.
        assert_eq!(&s[..64], &x[..64]);
        assert_eq!(&s[64..128], &x[256..320]);
        let small = &x[..1000];
        assert!(matches!(
            fit_sample(small, 64, FIT_SAMPLES),
            std::borrow::Cow::Borrowed(_)
        ));
        // A block longer than the budget: one block.
        assert_eq!(
            fit_sample(&x, FIT_SAMPLES * 2, FIT_SAMPLES).len(),
            FIT_SAMPLES * 2
        );
    }

    #[test]
    fn options_resolve_nu_and_layout_defaults() {
        let p = Policy::default;
        let o = ConvertOptions::from_args(None, None, None, None, Layout::Tquant, p()).unwrap();
        assert_eq!((o.format.name(), o.nu), ("sf4", Some(NuChoice::Fit)));
        let o =
            ConvertOptions::from_args(Some("sf4:nu=3.5"), None, None, None, Layout::Tquant, p())
                .unwrap();
        assert_eq!(o.nu, Some(NuChoice::Fixed(3.5)));
        let o = ConvertOptions::from_args(Some("sf3"), Some("7"), None, None, Layout::Tquant, p())
            .unwrap();
        assert_eq!((o.format.name(), o.bits()), ("sf3:nu=7", 3));
        assert!(
            ConvertOptions::from_args(Some("nf4"), Some("5"), None, None, Layout::Tquant, p())
                .is_err()
        );
        assert!(ConvertOptions::from_args(
            Some("sf4:nu=3"),
            Some("fit"),
            None,
            None,
            Layout::Tquant,
            p()
        )
        .is_err());
        assert!(
            ConvertOptions::from_args(Some("sf4"), Some("x"), None, None, Layout::Tquant, p())
                .is_err()
        );
        assert!(
            ConvertOptions::from_args(Some("sf4"), None, None, None, Layout::Bnb, p()).is_err()
        );
        assert!(ConvertOptions::from_args(None, None, Some("48"), None, Layout::Bnb, p()).is_err());
        assert!(
            ConvertOptions::from_args(None, None, None, Some("f16"), Layout::Mxfp4, p()).is_err()
        );
        let o = ConvertOptions::from_args(None, None, None, None, Layout::Mxfp4, p()).unwrap();
        assert_eq!((o.format.name(), o.scale_dtype), ("e2m1", ScaleDtype::E8m0));
    }
}
