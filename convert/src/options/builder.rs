//! [`ConvertOptionsBuilder`]: converter options from typed settings, each defaulting to the
//! layout's own, checked once at [`ConvertOptionsBuilder::build`].

use super::{AutoSpec, ConvertOptions, NuChoice};
use crate::error::{ConvertError, Setting};
use crate::policy::{KeepAs, Policy};
use crate::schema::Layout;
use crate::statistics::{Calibration, StagedCalibration};
use std::sync::Arc;
use tquant_formats::{BlockSize, FitSampling, Format, ScaleDtype, ScaleRule};

/// The value set a conversion quantizes with.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatChoice {
    /// A fixed table: a catalog format, `sf4:nu=X`, `custom:...`.
    Table(Format),
    /// Student Float of `bits` bits (3 or 4) with nu chosen per tensor or fixed.
    StudentFloat {
        /// Bits per code.
        bits: u32,
        /// How nu is chosen.
        nu: NuChoice,
    },
    /// `auto` or `auto:LIST` as written: per matrix the candidate with the least error.
    Auto(String),
    /// `learned`: a table per matrix by k-means, from [`super::LEARNED_START`]'s.
    Learned,
    /// `learned_row`: a table per row by the same k-means, from [`super::LEARNED_START`]'s.
    LearnedRow,
}

/// Builds [`ConvertOptions`]; every setting left out takes the layout's default (tquant: sf4
/// with nu fitted, blocks of 64, f16 scales; bnb: nf4, 64, f32; mxfp4: e2m1, 32, e8m0).
///
/// ```
/// use tquant_convert::{ConvertOptions, FormatChoice, Layout, NuChoice};
///
/// let o = ConvertOptions::builder()
///     .format(FormatChoice::StudentFloat { bits: 4, nu: NuChoice::Search })
///     .build()?;
/// assert_eq!((o.layout, o.nu, o.bits()), (Layout::Tquant, Some(NuChoice::Search), 4));
/// // bitsandbytes stores nf4 only.
/// let bnb = ConvertOptions::builder().layout(Layout::Bnb);
/// assert_eq!(bnb.clone().build()?.format.name(), "nf4");
/// let sf4 = FormatChoice::StudentFloat { bits: 4, nu: NuChoice::Fit };
/// assert!(bnb.format(sf4).build().is_err());
/// # Ok::<(), tquant_convert::ConvertError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConvertOptionsBuilder {
    format: Option<FormatChoice>,
    nu: Option<NuChoice>,
    block: Option<BlockSize>,
    scale_dtype: Option<ScaleDtype>,
    layout: Layout,
    policy: Policy,
    scale_rule: ScaleRule,
    fit_sampling: Option<FitSampling>,
    calibration: Option<Arc<Calibration>>,
    staged_calibration: Option<StagedCalibration>,
    keep_as: Option<KeepAs>,
    /// The format as the user wrote it, for messages.
    written: Option<String>,
}

impl ConvertOptionsBuilder {
    /// The format as written, which messages quote.
    pub(crate) fn written(mut self, text: &str) -> Self {
        self.written = Some(text.to_string());
        self
    }

    /// The value set (default: the layout's).
    pub fn format(mut self, format: FormatChoice) -> Self {
        self.format = Some(format);
        self
    }

    /// Overrides how a Student Float format chooses nu (for `auto`: its plain sf4 / sf3
    /// candidates, `fit` or `search`). An error at build for formats without nu or whose
    /// table already fixes one.
    pub fn nu(mut self, nu: NuChoice) -> Self {
        self.nu = Some(nu);
        self
    }

    /// Elements per block.
    pub fn block(mut self, block: BlockSize) -> Self {
        self.block = Some(block);
        self
    }

    /// The dtype scales are stored in.
    pub fn scale_dtype(mut self, scale_dtype: ScaleDtype) -> Self {
        self.scale_dtype = Some(scale_dtype);
        self
    }

    /// The on-disk layout (default: tquant's).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Which tensors are quantized.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How the embeddings and the output head are stored (default: q8_0 in tquant's layout,
    /// source precision in the others, which cannot store q8_0: asking them for it is an
    /// error at build).
    pub fn keep_as(mut self, keep: KeepAs) -> Self {
        self.keep_as = Some(keep);
        self
    }

    /// How each block's scale is chosen (default: absmax).
    pub fn scale_rule(mut self, rule: ScaleRule) -> Self {
        self.scale_rule = rule;
        self
    }

    /// Which values the Student-t fits see (default: [`FitSampling::DEFAULT`]).
    pub fn fit_sampling(mut self, sampling: FitSampling) -> Self {
        self.fit_sampling = Some(sampling);
        self
    }

    /// Calibration statistics: matrices they cover are quantized with GPTQ.
    pub fn calibration(mut self, calibration: Arc<Calibration>) -> Self {
        self.calibration = Some(calibration);
        self
    }

    /// Calibration statistics collected stage by stage during the conversion.
    pub fn staged_calibration(mut self, staged: StagedCalibration) -> Self {
        self.staged_calibration = Some(staged);
        self
    }

    /// The options, checked ([`ConvertOptions::validate`]).
    pub fn build(self) -> Result<ConvertOptions, ConvertError> {
        let (def_format, def_block, def_scale) = match self.layout {
            Layout::Tquant => (
                FormatChoice::StudentFloat {
                    bits: 4,
                    nu: NuChoice::Fit,
                },
                BlockSize::Elements(64),
                ScaleDtype::F16,
            ),
            Layout::Bnb => (
                FormatChoice::Table(catalog("nf4")),
                BlockSize::Elements(64),
                ScaleDtype::F32,
            ),
            Layout::Gguf => return Err(ConvertError::GgufLayout),
            Layout::Mxfp4 => (
                FormatChoice::Table(catalog("e2m1")),
                BlockSize::Elements(tquant_formats::layouts::MXFP4_BLOCK),
                ScaleDtype::E8m0,
            ),
            Layout::CompressedTensors | Layout::ModelOpt => (
                FormatChoice::Table(catalog("e2m1")),
                BlockSize::Elements(tquant_formats::nvfp4::NVFP4_BLOCK),
                ScaleDtype::E4m3,
            ),
        };
        let keep_as = match (self.keep_as, self.layout) {
            (Some(KeepAs::Q8_0), layout) if layout != Layout::Tquant => {
                return Err(ConvertError::KeepAsLayout { layout })
            }
            (Some(KeepAs::HeadQ8_0), layout) if layout != Layout::Tquant => {
                return Err(ConvertError::KeepAsHeadLayout { layout })
            }
            (Some(keep), _) => keep,
            (None, Layout::Tquant) => KeepAs::Q8_0,
            (None, _) => KeepAs::Source,
        };
        let block = self.block.unwrap_or(def_block);
        let scale_dtype = self.scale_dtype.unwrap_or(def_scale);
        let (mut learned, mut row_tables) = (false, false);
        let (format, nu, auto) = match (self.format.unwrap_or(def_format), self.nu) {
            (FormatChoice::Learned, None) => {
                learned = true;
                (catalog(super::LEARNED_START), None, None)
            }
            (FormatChoice::LearnedRow, None) => {
                (learned, row_tables) = (true, true);
                (catalog(super::LEARNED_START), None, None)
            }
            (FormatChoice::Learned, Some(_)) => {
                return Err(ConvertError::NuNotApplicable {
                    format: super::LEARNED.to_string(),
                })
            }
            (FormatChoice::LearnedRow, Some(_)) => {
                return Err(ConvertError::NuNotApplicable {
                    format: crate::schema::LEARNED_ROW.to_string(),
                })
            }
            (FormatChoice::Auto(text), nu) => {
                let nu = nu.map(|nu| match nu {
                    NuChoice::Fit => "fit".to_string(),
                    NuChoice::Search => "search".to_string(),
                    NuChoice::Fixed(v) => v.to_string(),
                });
                let spec = AutoSpec::parse(&text, nu.as_deref(), scale_dtype)?;
                (spec.first_format(), None, Some(spec))
            }
            (FormatChoice::StudentFloat { bits, nu }, over) => {
                let nu = over.unwrap_or(nu);
                // Fit and search only need the bit width; a fixed nu is the table itself.
                let table = match nu {
                    NuChoice::Fixed(v) => v,
                    NuChoice::Fit | NuChoice::Search => tquant_formats::catalog::DEFAULT_NU,
                };
                let format = Format::student_float(bits, table)
                    .map_err(|e| ConvertError::setting(Setting::Nu, table.to_string(), e))?;
                (format, Some(nu), None)
            }
            (FormatChoice::Table(format), None) => {
                let nu = format.nu().map(NuChoice::Fixed);
                (format, nu, None)
            }
            (FormatChoice::Table(format), Some(_)) if format.nu().is_some() => {
                return Err(ConvertError::NuAlreadyFixed {
                    format: self.written.unwrap_or_else(|| format.name().to_string()),
                    bits: format.bits(),
                })
            }
            (FormatChoice::Table(format), Some(_)) => {
                return Err(ConvertError::NuNotApplicable {
                    format: format.name().to_string(),
                })
            }
        };
        let opts = ConvertOptions {
            format,
            nu,
            block,
            scale_dtype,
            layout: self.layout,
            policy: self.policy,
            scale_rule: self.scale_rule,
            auto,
            calibration: self.calibration,
            staged_calibration: self.staged_calibration,
            fit_sampling: self.fit_sampling.unwrap_or(FitSampling::DEFAULT),
            keep_as,
            learned,
            row_tables,
        };
        opts.validate()?;
        Ok(opts)
    }
}

fn catalog(name: &str) -> Format {
    name.parse()
        .expect("the layouts' formats are in the catalog")
}
