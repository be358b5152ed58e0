//! A recipe: one way of quantizing a checkpoint, named by one string (`nf4`, `sf4_fit`,
//! `auto+search`, `gptq:nf4`), as the report's rows are named.
//!
//! Grammar: `[gptq:]BASE[+search]` or `AUTO[+search][+gptq]`, where BASE is a catalog name,
//! `sf4` / `sf3` (the paper's fixed nu = 5), `sf4:nu=X`, `sf4_fit` / `sf3_fit` (nu fitted per
//! tensor), `sf4_search` / `sf3_search` (nu with the least weight error per tensor),
//! `custom:v0,v1,...`, `learned` (a 16-value table per matrix by k-means on its
//! block-normalised values, from `sf4_opt`'s) or `learned_row` (the same per row, stored in f16); AUTO is `auto` or `auto:A/B/...` (per matrix the candidate with the least
//! weight error). `+search` searches each block's scale instead of the absmax rule (`+rceil`
//! and `+4over6` choose it by the FP4 rules of [`ScaleRule`]); `gptq`
//! quantizes with calibration statistics (given separately).
//!
//! A bare `sf4` means nu = 5 wherever a recipe is parsed (`tquant convert --format`, the
//! report); fitting nu per tensor, the converter's default, is written `sf4_fit`.

use crate::error::{ConvertError, Setting};
use crate::options::{ConvertOptions, ConvertOptionsBuilder, FormatChoice, NuChoice};
use crate::schema::Layout;
use std::fmt;
use std::str::FromStr;
use tquant_formats::{BlockSize, Format, ScaleDtype, ScaleRule};

/// The nu of a bare `sf4` / `sf3` recipe (Dotzel et al.'s choice).
pub const PAPER_NU: f64 = 5.0;

/// The value set a recipe quantizes with.
#[derive(Debug, Clone, PartialEq)]
pub enum RecipeFormat {
    /// A catalog format other than Student Float, by name (`nf4`, `int4`, `e2m1`, ...).
    Catalog(String),
    /// Student Float of `bits` bits with its nu rule.
    StudentFloat {
        /// Bits per code.
        bits: u32,
        /// How nu is chosen.
        nu: NuChoice,
    },
    /// Per matrix the candidate with the least weight error; `None` is the default list.
    Auto(Option<Vec<String>>),
    /// A custom codebook, values in code order.
    Custom(Vec<f32>),
    /// A table learned per matrix (`learned`).
    Learned,
    /// A table learned per row (`learned_row`).
    LearnedRow,
}

/// One way of quantizing: value set, nu rule, scale rule, and whether GPTQ runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The value set.
    pub format: RecipeFormat,
    /// How each block's scale is chosen.
    pub scale_rule: ScaleRule,
    /// Quantize with calibration statistics (GPTQ; for `auto`, the choice by the
    /// activation-weighted error).
    pub gptq: bool,
}

/// Settings given apart from a recipe, each replacing the recipe's (or the layout's default)
/// when set.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Overrides {
    /// Student Float's nu.
    pub nu: Option<NuChoice>,
    /// Elements per block.
    pub block: Option<BlockSize>,
    /// The dtype scales are stored in.
    pub scale_dtype: Option<ScaleDtype>,
    /// How a block's scale is chosen.
    pub scale_rule: Option<ScaleRule>,
}

impl Recipe {
    /// The recipes of the report's `all`: every catalog format (SF4 at nu = 5), SF4 with nu
    /// fitted and searched per tensor, then `auto` with absmax and with searched scales.
    pub fn all() -> Vec<Recipe> {
        let mut names: Vec<&str> = tquant_formats::catalog::NAMES.to_vec();
        names.extend(["sf4_fit", "sf4_search", "auto", "auto+search"]);
        names
            .into_iter()
            .map(|n| n.parse().expect("catalog names are recipes"))
            .collect()
    }

    /// The same recipe with GPTQ.
    pub fn with_gptq(&self) -> Recipe {
        Recipe {
            gptq: true,
            ..self.clone()
        }
    }

    /// A builder of converter options with this recipe's format and scale rule (tquant's
    /// layout and the default policy unless set; no calibration attached: a `gptq` recipe
    /// needs the caller's statistics).
    pub fn builder(&self) -> Result<ConvertOptionsBuilder, ConvertError> {
        let table = |name: &str| {
            name.parse()
                .map(FormatChoice::Table)
                .map_err(|e| ConvertError::setting(Setting::Format, name, e))
        };
        let format = match &self.format {
            RecipeFormat::StudentFloat { bits, nu } => FormatChoice::StudentFloat {
                bits: *bits,
                nu: *nu,
            },
            RecipeFormat::Auto(_) => FormatChoice::Auto(self.base()),
            RecipeFormat::Learned => FormatChoice::Learned,
            RecipeFormat::LearnedRow => FormatChoice::LearnedRow,
            RecipeFormat::Catalog(_) | RecipeFormat::Custom(_) => table(&self.base())?,
        };
        Ok(ConvertOptions::builder()
            .format(format)
            .scale_rule(self.scale_rule))
    }

    /// The recipe `text` and a builder of its options as written: like [`Recipe::builder`],
    /// except that a nu spelled out in it (`sf4:nu=3`) belongs to the table, so a nu set on the
    /// builder besides is refused (a bare `sf4`'s nu = 5 may be overridden).
    pub fn parse_builder(text: &str) -> Result<(Recipe, ConvertOptionsBuilder), ConvertError> {
        let recipe: Recipe = text.parse()?;
        let mut builder = recipe.builder()?;
        if let RecipeFormat::StudentFloat {
            bits,
            nu: NuChoice::Fixed(nu),
        } = recipe.format
        {
            if text.contains(":nu=") {
                let table = Format::student_float(bits, nu)
                    .map_err(|e| ConvertError::setting(Setting::Nu, nu.to_string(), e))?;
                builder = builder.format(FormatChoice::Table(table)).written(text);
            }
        }
        Ok((recipe, builder))
    }

    /// The recipe a layout converts with when none is given: `sf4_fit` for tquant's, `nf4` for
    /// bitsandbytes', `e2m1` for MXFP4 and compressed-tensors (NVFP4 unless the block and scale
    /// dtype say MXFP4) and ModelOpt.
    pub fn default_for(layout: Layout) -> &'static str {
        match layout {
            Layout::Tquant => "sf4_fit",
            Layout::Bnb => "nf4",
            Layout::Mxfp4 | Layout::CompressedTensors | Layout::ModelOpt => "e2m1",
            // Not a recipe: the GGUF exporter's default type (`builder_with` refuses gguf).
            Layout::Gguf => "iq4_nl",
        }
    }

    /// Refuses a recipe that quantizes with GPTQ when there is no calibration to give it.
    pub fn check_calibrated(&self, calibrated: bool) -> Result<(), ConvertError> {
        if self.gptq && !calibrated {
            let recipe = self.to_string();
            return Err(ConvertError::NeedsCalibration { recipe });
        }
        Ok(())
    }

    /// The recipe `text` (or `layout`'s default) and a builder of its options in `layout`, with
    /// the settings of `overrides` in place of the recipe's: what a front end (the CLI, the
    /// Python package) builds from a format name and separate settings.
    pub fn builder_with(
        text: Option<&str>,
        layout: Layout,
        overrides: &Overrides,
    ) -> Result<(Recipe, ConvertOptionsBuilder), ConvertError> {
        if layout == Layout::Gguf {
            return Err(ConvertError::GgufLayout);
        }
        let (recipe, mut b) = Recipe::parse_builder(text.unwrap_or(Recipe::default_for(layout)))?;
        b = b.layout(layout);
        if let Some(nu) = overrides.nu {
            b = b.nu(nu);
        }
        if let Some(block) = overrides.block {
            b = b.block(block);
        }
        if let Some(d) = overrides.scale_dtype {
            b = b.scale_dtype(d);
        }
        if let Some(rule) = overrides.scale_rule {
            b = b.scale_rule(rule);
        }
        Ok((recipe, b))
    }

    /// Converter options for this recipe with the tquant layout and default policy (no
    /// calibration attached: a `gptq` recipe needs the caller's statistics).
    pub fn options(
        &self,
        block: BlockSize,
        scale_dtype: ScaleDtype,
    ) -> Result<ConvertOptions, ConvertError> {
        self.builder()?
            .block(block)
            .scale_dtype(scale_dtype)
            .build()
    }

    /// The name without scale rule or GPTQ marks.
    fn base(&self) -> String {
        match &self.format {
            RecipeFormat::Catalog(n) => n.clone(),
            RecipeFormat::StudentFloat { bits, nu } => match nu {
                NuChoice::Fit => format!("sf{bits}_fit"),
                NuChoice::Search => format!("sf{bits}_search"),
                NuChoice::Fixed(v) if *v == PAPER_NU => format!("sf{bits}"),
                NuChoice::Fixed(v) => format!("sf{bits}:nu={v}"),
            },
            RecipeFormat::Auto(None) => "auto".into(),
            RecipeFormat::Learned => crate::options::LEARNED.into(),
            RecipeFormat::LearnedRow => crate::schema::LEARNED_ROW.into(),
            RecipeFormat::Auto(Some(list)) => format!("auto:{}", list.join("/")),
            RecipeFormat::Custom(values) => {
                let v: Vec<String> = values.iter().map(f32::to_string).collect();
                format!("custom:{}", v.join(","))
            }
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auto = matches!(self.format, RecipeFormat::Auto(_));
        if self.gptq && !auto {
            f.write_str("gptq:")?;
        }
        f.write_str(&self.base())?;
        if self.scale_rule != ScaleRule::Absmax {
            write!(f, "+{}", self.scale_rule)?;
        }
        if self.gptq && auto {
            f.write_str("+gptq")?;
        }
        Ok(())
    }
}

fn syntax(s: &str, reason: &'static str) -> ConvertError {
    ConvertError::RecipeSyntax {
        recipe: s.to_string(),
        reason,
    }
}

impl FromStr for Recipe {
    type Err = ConvertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rest = s.trim();
        let mut gptq = false;
        if let Some(r) = rest.strip_prefix("gptq:") {
            (rest, gptq) = (r, true);
        }
        if let Some(r) = rest.strip_suffix("+gptq") {
            if gptq {
                return Err(syntax(s, "GPTQ is asked for twice"));
            }
            (rest, gptq) = (r, true);
        }
        let (rest, scale_rule) = [ScaleRule::Search]
            .into_iter()
            .chain(ScaleRule::FP4)
            .find_map(|rule| Some((rest.strip_suffix(&format!("+{rule}"))?, rule)))
            .unwrap_or((rest, ScaleRule::Absmax));
        let sf = |bits, nu| RecipeFormat::StudentFloat { bits, nu };
        let format = match rest {
            "" => return Err(syntax(s, "no format")),
            "sf4_fit" => sf(4, NuChoice::Fit),
            "sf3_fit" => sf(3, NuChoice::Fit),
            "sf4_search" => sf(4, NuChoice::Search),
            "sf3_search" => sf(3, NuChoice::Search),
            "auto" => RecipeFormat::Auto(None),
            crate::options::LEARNED => RecipeFormat::Learned,
            crate::schema::LEARNED_ROW => RecipeFormat::LearnedRow,
            _ => {
                if let Some(list) = rest.strip_prefix("auto:") {
                    let names: Vec<String> = list
                        .split(['/', ','])
                        .map(|n| n.trim().to_string())
                        .collect();
                    RecipeFormat::Auto(Some(names))
                } else {
                    let f: Format = rest.parse().map_err(|source| ConvertError::RecipeFormat {
                        recipe: s.to_string(),
                        source,
                    })?;
                    let base = rest.split(':').next().unwrap_or(rest);
                    match (f.nu(), base) {
                        (Some(nu), "sf4" | "sf3") => sf(f.bits(), NuChoice::Fixed(nu)),
                        (_, "custom") => RecipeFormat::Custom(f.codebook().values().to_vec()),
                        _ => RecipeFormat::Catalog(rest.to_string()),
                    }
                }
            }
        };
        let recipe = Recipe {
            format,
            scale_rule,
            gptq,
        };
        // Every recipe must make converter options (auto lists, custom tables, nu).
        recipe
            .options(BlockSize::Elements(64), ScaleDtype::F32)
            .map_err(|e| ConvertError::Recipe {
                recipe: s.to_string(),
                source: Box::new(e),
            })?;
        Ok(recipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_catalog_recipe_round_trips_through_its_name() {
        let mut names: Vec<String> = Recipe::all()
            .iter()
            .filter(|r| r.scale_rule == ScaleRule::Absmax)
            .map(Recipe::to_string)
            .collect();
        names.extend(
            [
                "sf3_fit",
                "sf3_search",
                "sf4:nu=3.5",
                "auto:apot4_sp/int4_full",
                "custom:-1,0,0.5,1",
                "learned",
                "learned_row",
                "sf4_opt",
                "sf4_opt:nu=3.5",
                "auto:sf4_opt/int4_full",
            ]
            .map(String::from),
        );
        for base in names {
            for rule in ["", "+search", "+rceil", "+4over6"] {
                let plain = format!("{base}{rule}");
                let calibrated = if base.starts_with("auto") {
                    format!("{plain}+gptq")
                } else {
                    format!("gptq:{plain}")
                };
                for name in [plain, calibrated] {
                    let r: Recipe = name.parse().unwrap();
                    assert_eq!(r.to_string(), name);
                    assert_eq!(r.to_string().parse::<Recipe>().unwrap(), r);
                }
            }
        }
    }

    #[test]
    fn bare_sf4_is_the_papers_nu_and_sf4_fit_fits() {
        let r: Recipe = "sf4".parse().unwrap();
        let o = r.options(BlockSize::Elements(64), ScaleDtype::F16).unwrap();
        assert_eq!(o.nu, Some(NuChoice::Fixed(5.0)));
        assert_eq!(
            o.format.codebook().values(),
            tquant_formats::catalog::SF4_NU5
        );
        let o = "sf4_fit".parse::<Recipe>().unwrap();
        let o = o.options(BlockSize::Row, ScaleDtype::F32).unwrap();
        assert_eq!(o.nu, Some(NuChoice::Fit));
        assert_eq!("sf4:nu=5".parse::<Recipe>().unwrap().to_string(), "sf4");
    }

    #[test]
    fn a_builder_as_written_lets_nu_override_only_a_bare_sf4() {
        let (r, b) = Recipe::parse_builder("sf4").unwrap();
        assert_eq!(r.to_string(), "sf4");
        let o = b.nu(NuChoice::Fixed(3.0)).build().unwrap();
        assert_eq!(o.format.name(), "sf4:nu=3");
        let (_, b) = Recipe::parse_builder("gptq:sf4:nu=5+search").unwrap();
        let e = b.nu(NuChoice::Fixed(3.0)).build().unwrap_err();
        assert!(
            matches!(&e, ConvertError::NuAlreadyFixed { format, bits: 4 } if format == "gptq:sf4:nu=5+search"),
            "{e}"
        );
        let (r, b) = Recipe::parse_builder("nf4+search").unwrap();
        assert!(!r.gptq);
        assert_eq!(b.build().unwrap().scale_rule, ScaleRule::Search);
        let (r, b) = Recipe::parse_builder("auto:nf4/sf4+gptq").unwrap();
        assert!(r.gptq);
        let o = b.nu(NuChoice::Fit).build().unwrap();
        assert_eq!(o.auto.unwrap().name(), "auto:nf4,sf4_fit");
    }

    #[test]
    fn learned_learns_from_sf4_opt_and_sf4_opt_is_a_fixed_table() {
        let o = "learned+search".parse::<Recipe>().unwrap();
        assert_eq!(o.format, RecipeFormat::Learned);
        let o = o.options(BlockSize::Elements(64), ScaleDtype::F16).unwrap();
        assert!(o.learned);
        assert_eq!((o.format.name(), o.nu), ("sf4_opt", None));
        assert_eq!(o.scale_rule, ScaleRule::Search);
        let o = "sf4_opt:nu=3".parse::<Recipe>().unwrap();
        assert_eq!(o.format, RecipeFormat::Catalog("sf4_opt:nu=3".into()));
        let o = o.options(BlockSize::Elements(64), ScaleDtype::F16).unwrap();
        assert!(!o.learned);
        assert_eq!(o.nu, Some(NuChoice::Fixed(3.0)));
        let e = "auto:learned/nf4".parse::<Recipe>().unwrap_err();
        assert!(e.to_string().contains("unknown format 'learned'"), "{e}");
    }

    #[test]
    fn bad_recipes_are_refused() {
        for bad in [
            "",
            "nf5",
            "nf4+searched",
            "auto:nf4/nf3",
            "gptq:nf4+gptq",
            "sf4:x=3",
            "custom:a",
        ] {
            assert!(bad.parse::<Recipe>().is_err(), "{bad}");
        }
        let e = "auto:nf4/nf3".parse::<Recipe>().unwrap_err();
        assert!(
            matches!(&e, ConvertError::Recipe { recipe, source }
                if recipe == "auto:nf4/nf3" && matches!(**source, ConvertError::AutoList { .. })),
            "{e}"
        );
        assert!(matches!(
            "nf5+search".parse::<Recipe>(),
            Err(ConvertError::RecipeFormat { .. })
        ));
        assert!(matches!(
            "gptq:nf4+gptq".parse::<Recipe>(),
            Err(ConvertError::RecipeSyntax { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_fixed_nu_and_custom_table_round_trips(
            nu in 0.5f64..1000.0,
            bits in 3u32..=4,
            search: bool,
            gptq: bool,
            values in proptest::collection::btree_set(-1000i32..1000, 4..=16),
        ) {
            let rule = if search { ScaleRule::Search } else { ScaleRule::Absmax };
            let sf = Recipe { format: RecipeFormat::StudentFloat { bits, nu: NuChoice::Fixed(nu) },
                scale_rule: rule, gptq };
            prop_assert_eq!(sf.to_string().parse::<Recipe>().unwrap(), sf.clone());
            let values: Vec<f32> = values.into_iter().map(|v| v as f32 / 7.0).collect();
            let n = values.len();
            if n == 16 || n == 8 {
                let c = Recipe { format: RecipeFormat::Custom(values), scale_rule: rule, gptq };
                prop_assert_eq!(c.to_string().parse::<Recipe>().unwrap(), c);
            }
        }
    }
}
