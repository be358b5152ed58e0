//! Everything that decides how a checkpoint is converted ([`ConvertOptions`]), built and
//! checked here before any weight is read: the format and its nu rule, the block, the scale
//! dtype and rule, the layout, the tensor policy, `auto`'s candidates and the calibration.

mod auto;
mod builder;

pub use auto::{is_auto, AutoSpec, Candidate, AUTO, DEFAULT_CANDIDATES};
pub use builder::{ConvertOptionsBuilder, FormatChoice};

use crate::error::{ConvertError, Setting};
use crate::policy::{KeepAs, Policy};
use crate::schema::Layout;
use crate::statistics::{Calibration, StagedCalibration};
use std::sync::Arc;
use tquant_formats::block::ScaleRule;
use tquant_formats::layouts::{BNB_BLOCKS, MXFP4_BLOCK};
use tquant_formats::{BlockQuantizer, BlockSize, FitSampling, Format, ScaleDtype};

/// How the degrees of freedom of a Student Float codebook are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NuChoice {
    /// Per tensor (per expert): maximum-likelihood fit on block-standardised values.
    Fit,
    /// Per tensor (per expert): the nu whose codebook gives the matrix the least squared error
    /// (a 1-D search, `tquant_formats::nu_search`); slower than the fit, and never worse on the
    /// matrix itself.
    Search,
    /// This nu for every matrix.
    Fixed(f64),
}

impl std::str::FromStr for NuChoice {
    type Err = ConvertError;

    /// `fit`, `search` or a number (checked to make a Student Float table when it is used).
    fn from_str(s: &str) -> Result<Self, ConvertError> {
        match s {
            "fit" => Ok(Self::Fit),
            "search" => Ok(Self::Search),
            v => v.parse().map(Self::Fixed).map_err(|_| ConvertError::BadNu {
                value: v.to_string(),
            }),
        }
    }
}

/// Everything that decides how a checkpoint is converted.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertOptions {
    /// The format; for Student Float with [`NuChoice::Fit`] only its bit width matters.
    pub format: Format,
    /// `Some` exactly for Student Float formats.
    pub nu: Option<NuChoice>,
    /// Elements per block (or whole rows).
    pub block: BlockSize,
    /// The dtype each block's scale is stored in.
    pub scale_dtype: ScaleDtype,
    /// How the quantized tensors are stored.
    pub layout: Layout,
    /// Which tensors are quantized, kept or left out.
    pub policy: Policy,
    /// How each block's scale is chosen (tquant's layout only; bnb and mxfp4 fix their own).
    pub scale_rule: ScaleRule,
    /// `auto[:LIST]`: the candidates chosen from per matrix; `format` is then the first
    /// candidate's table (only its bit width matters) and `nu` is `None`.
    pub auto: Option<AutoSpec>,
    /// Input statistics from running the model over calibration text: matrices they cover are
    /// quantized with GPTQ (the `calibration` module).
    pub calibration: Option<Arc<Calibration>>,
    /// The same, collected a group of layers at a time during the conversion (a model whose
    /// statistics do not fit in memory at once). At most one of the two is set.
    pub staged_calibration: Option<StagedCalibration>,
    /// Which values the Student-t fits see: a seeded sample of whole blocks (the converter's
    /// default, [`FitSampling::DEFAULT`]) or every value (the paper's fit, as the report uses).
    pub fit_sampling: FitSampling,
    /// How the embeddings and the output head the policy does not quantize to 4 bits are
    /// stored: q8_0 (the default) or at source precision. Only tquant's layout stores q8_0;
    /// every other layout keeps them at source precision ([`ConvertOptions::keep_as`]).
    pub keep_as: KeepAs,
    /// `learned`: each matrix gets its own table, k-means on its block-normalised values
    /// (weighted per column by the calibration's `diag(H)` when there is one) starting from
    /// `format`'s table ([`LEARNED_START`]); tquant's layout only.
    pub learned: bool,
    /// With `learned`: a table per row instead of per matrix (`learned_row`), stored as each
    /// tensor's `.row_tables` part.
    pub row_tables: bool,
}

pub use crate::schema::LEARNED;
/// The table learned tables start from: the Lloyd-Max table of block-normalised Student-t (nu 5).
pub const LEARNED_START: &str = "sf4_opt";

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
            keep_as: KeepAs::Q8_0,
            learned: false,
            row_tables: false,
        }
    }
}

/// A block size as text (`64`, `row`).
pub fn parse_block(text: &str) -> Result<BlockSize, ConvertError> {
    text.parse()
        .map_err(|e| ConvertError::setting(Setting::Block, text, e))
}

/// A scale dtype as text (`f16`, `e8m0`).
pub fn parse_scale_dtype(text: &str) -> Result<ScaleDtype, ConvertError> {
    text.parse()
        .map_err(|e| ConvertError::setting(Setting::ScaleDtype, text, e))
}

impl ConvertOptions {
    /// A builder starting from the layout's defaults (see [`ConvertOptionsBuilder`]).
    pub fn builder() -> ConvertOptionsBuilder {
        ConvertOptionsBuilder::default()
    }

    /// Options from strings (the C API's and older callers' interface; new code uses
    /// [`ConvertOptions::builder`] or [`crate::Recipe::options`]). `None` takes the layout's
    /// default: sf4 / fitted nu / block 64 / f16 for tquant, nf4 / 64 / f32 absmax for bnb,
    /// e2m1 / 32 / e8m0 for mxfp4. Here a bare `sf4` fits nu per tensor unless `nu` says
    /// otherwise, `sf4:nu=X` fixes it. A `nu` for a format that has none, or settings a layout
    /// cannot store, are errors.
    pub fn from_args(
        format: Option<&str>,
        nu: Option<&str>,
        block: Option<&str>,
        scale_dtype: Option<&str>,
        layout: Layout,
        policy: Policy,
    ) -> Result<Self, ConvertError> {
        let mut b = Self::builder().layout(layout).policy(policy);
        if let Some(block) = block {
            b = b.block(parse_block(block)?);
        }
        if let Some(d) = scale_dtype {
            b = b.scale_dtype(parse_scale_dtype(d)?);
        }
        let Some(text) = format else {
            return match nu {
                Some(nu) => b.nu(nu.parse()?).build(),
                None => b.build(),
            };
        };
        if is_auto(text) {
            if let Some(v) = nu.filter(|v| !matches!(*v, "fit" | "search")) {
                return Err(ConvertError::AutoNu {
                    value: v.to_string(),
                });
            }
            b = b.format(FormatChoice::Auto(text.to_string()));
            return match nu {
                Some(nu) => b.nu(nu.parse()?).build(),
                None => b.build(),
            };
        }
        let format: Format = text
            .parse()
            .map_err(|e| ConvertError::setting(Setting::Format, text, e))?;
        if let (Some(_), Some(_)) = (format.nu(), nu) {
            if text.contains(':') {
                return Err(ConvertError::NuAlreadyFixed {
                    format: text.to_string(),
                    bits: format.bits(),
                });
            }
        }
        b = match format.nu() {
            // "sf4:nu=3.5" fixes nu; a plain "sf4" fits it unless nu says otherwise.
            Some(_) if text.contains(':') => b.format(FormatChoice::Table(format)),
            Some(_) => b.format(FormatChoice::StudentFloat {
                bits: format.bits(),
                nu: NuChoice::Fit,
            }),
            None => b.format(FormatChoice::Table(format)),
        };
        match nu {
            Some(nu) => b.nu(nu.parse()?).build(),
            None => b.build(),
        }
    }

    /// How the embeddings and output head are stored in this layout: [`ConvertOptions::keep_as`]
    /// in tquant's, at source precision in every other (their engines do not load q8_0).
    pub fn keep_as(&self) -> KeepAs {
        match self.layout {
            Layout::Tquant => self.keep_as,
            _ => KeepAs::Source,
        }
    }

    /// The same options with another scale rule (`search` needs tquant's layout).
    pub fn with_scale_rule(mut self, rule: ScaleRule) -> Result<Self, ConvertError> {
        self.scale_rule = rule;
        self.validate()?;
        Ok(self)
    }

    /// Checks that the layout can store this format, block and scale dtype.
    pub fn validate(&self) -> Result<(), ConvertError> {
        if self.calibration.is_some() && self.staged_calibration.is_some() {
            return Err(ConvertError::CalibrationTwice);
        }
        if self.calibration.is_some() || self.staged_calibration.is_some() {
            check_calibration_layout(self.layout)?;
        }
        if self.learned && self.layout != Layout::Tquant {
            return Err(ConvertError::LearnedLayout {
                layout: self.layout,
                row_tables: self.row_tables,
            });
        }
        if self.scale_rule != ScaleRule::Absmax && self.layout != Layout::Tquant {
            return Err(ConvertError::ScaleRuleLayout {
                rule: self.scale_rule,
                layout: self.layout,
            });
        }
        let q = BlockQuantizer {
            block: self.block,
            scale_dtype: self.scale_dtype,
        };
        if let Some(spec) = &self.auto {
            return spec.validate(self.layout, &q);
        }
        match self.layout {
            Layout::Tquant => q
                .check(self.format.codebook())
                .map_err(|e| ConvertError::setting(Setting::Format, self.format.name(), e)),
            Layout::Bnb => {
                let ok_block =
                    matches!(self.block, BlockSize::Elements(n) if BNB_BLOCKS.contains(&n));
                let wrong = ConvertError::BnbSettings {
                    format: (self.format.name() != "nf4").then(|| self.format.to_string()),
                    scale_dtype: (self.scale_dtype != ScaleDtype::F32).then_some(self.scale_dtype),
                    block: (!ok_block).then_some(self.block),
                };
                match wrong {
                    ConvertError::BnbSettings {
                        format: None,
                        scale_dtype: None,
                        block: None,
                    } => Ok(()),
                    wrong => Err(wrong),
                }
            }
            Layout::Gguf => Err(ConvertError::GgufLayout),
            Layout::Mxfp4 => {
                if self.format.name() != "e2m1"
                    || self.scale_dtype != ScaleDtype::E8m0
                    || self.block != BlockSize::Elements(MXFP4_BLOCK)
                {
                    return Err(ConvertError::Mxfp4Settings {
                        format: self.format.to_string(),
                        scale_dtype: self.scale_dtype,
                        block: self.block,
                    });
                }
                Ok(())
            }
            Layout::CompressedTensors | Layout::ModelOpt => {
                let ct =
                    crate::schema::CtFormat::of(self.format.name(), self.block, self.scale_dtype);
                match ct {
                    Some(crate::schema::CtFormat::Mxfp4) if self.layout == Layout::ModelOpt => {
                        Err(ConvertError::CtSettings {
                            layout: self.layout,
                            format: self.format.to_string(),
                            scale_dtype: self.scale_dtype,
                            block: self.block,
                        })
                    }
                    Some(_) => Ok(()),
                    None => Err(ConvertError::CtSettings {
                        layout: self.layout,
                        format: self.format.to_string(),
                        scale_dtype: self.scale_dtype,
                        block: self.block,
                    }),
                }
            }
        }
    }

    /// Bits per code of the chosen format.
    pub fn bits(&self) -> u32 {
        self.format.bits()
    }
}

/// GPTQ writes tquant's layout only; callers that prepare a calibration check this first, so
/// the float model never runs for a conversion that cannot use it.
pub fn check_calibration_layout(layout: Layout) -> Result<(), ConvertError> {
    if layout != Layout::Tquant {
        return Err(ConvertError::CalibrationLayout { layout });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_builder_takes_layout_defaults_and_refuses_with_typed_errors() {
        let b = ConvertOptions::builder;
        let sf4 = |nu| FormatChoice::StudentFloat { bits: 4, nu };
        assert_eq!(b().build().unwrap(), ConvertOptions::default());
        let o = b()
            .format(sf4(NuChoice::Fixed(5.0)))
            .nu(NuChoice::Fixed(3.0))
            .build()
            .unwrap();
        assert_eq!(
            (o.format.name(), o.nu),
            ("sf4:nu=3", Some(NuChoice::Fixed(3.0)))
        );
        let nf4 = FormatChoice::Table("nf4".parse().unwrap());
        let e = b().format(nf4).nu(NuChoice::Fit).build().unwrap_err();
        assert!(
            matches!(&e, ConvertError::NuNotApplicable { format } if format == "nf4"),
            "{e}"
        );
        let fixed = FormatChoice::Table("sf4:nu=3".parse().unwrap());
        let e = b().format(fixed).nu(NuChoice::Fit).build().unwrap_err();
        assert!(
            matches!(e, ConvertError::NuAlreadyFixed { bits: 4, .. }),
            "{e}"
        );
        let e = b().format(sf4(NuChoice::Fixed(-1.0))).build().unwrap_err();
        assert!(
            matches!(&e, ConvertError::BadSetting { setting: Setting::Nu, value, .. } if value == "-1"),
            "{e}"
        );
        assert!(
            std::error::Error::source(&e).is_some(),
            "the format's error is kept"
        );
        let e = b()
            .layout(Layout::Mxfp4)
            .scale_rule(ScaleRule::Search)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::ScaleRuleLayout {
                    rule: ScaleRule::Search,
                    layout: Layout::Mxfp4
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn messages_name_settings_plainly_and_a_front_end_spells_them() {
        let e = ConvertOptions::builder()
            .layout(Layout::Bnb)
            .format(FormatChoice::StudentFloat {
                bits: 4,
                nu: NuChoice::Fit,
            })
            .block(BlockSize::Elements(48))
            .build()
            .unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::BnbSettings {
                    format: Some(_),
                    scale_dtype: None,
                    block: Some(BlockSize::Elements(48))
                }
            ),
            "{e}"
        );
        let plain = e.to_string();
        assert!(!plain.contains("--"), "{plain}");
        assert!(
            plain.contains("layout bnb (bitsandbytes NF4) supports format nf4 only (got sf4)"),
            "{plain}"
        );
        let flag = |s: Setting| match s {
            Setting::Layout => "--layout",
            Setting::Format => "--format",
            Setting::Block => "--block",
            _ => "--other",
        };
        let cli = e.with_flags(&flag).to_string();
        assert!(
            cli.contains("--layout bnb (bitsandbytes NF4) supports --format nf4 only (got sf4)")
                && cli.contains("; --block 32, 64, ")
                && cli.ends_with("use --layout tquant for other formats"),
            "{cli}"
        );
        // Advice that only a front end can give is left out of the plain message.
        let exists = ConvertError::OutputExists { path: "out".into() };
        assert_eq!(exists.to_string(), "out: output exists");
        let force = |_| "--force";
        assert_eq!(
            exists.with_flags(&force).to_string(),
            "out: output exists; pass --force to replace it"
        );
    }
}
