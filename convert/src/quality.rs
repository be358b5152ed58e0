//! Quality presets: `fast`, `balanced`, `best`, each a measured combination of the converter's
//! levers (a recipe, calibration on text the model writes itself, how the embeddings and
//! output head are stored). The recipes live here and nowhere else, so swapping one is a
//! one-line change; a front end parses the name and lets its explicit settings (format, block,
//! scale rule, calibration file, ...) replace the preset's corresponding part.
//!
//! Losses and conversion rates are measured in `docs/quality.md`.

use crate::error::Setting;
use crate::policy::KeepAs;
use std::fmt;
use std::str::FromStr;

/// Tokens a preset that calibrates has the model write itself (`--calibrate-self N`): the
/// amount measured in docs/calibration.md; 4x as many did not help.
pub const SELF_CALIBRATION_TOKENS: usize = 65536;

/// A quality preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    /// `int4_full` with absmax scales, no calibration: the cheapest recipe and the best fixed
    /// format under round-to-nearest on tiny-lite (1.00x its loss).
    Fast,
    /// `learned+search`: a 16-value table learned per matrix and every block's scale searched,
    /// no calibration (0.72x the best fixed format's loss). The default: it converts a
    /// DeepSeek-V2-Lite-sized model (16B parameters) on 8 cores well within an hour.
    #[default]
    Balanced,
    /// `gptq:learned+search` on [`SELF_CALIBRATION_TOKENS`] tokens the float model writes itself
    /// (0.42x); a calibration file given besides replaces the self-generated text. Generating
    /// the text runs the whole float model token by token, hours for a 16B model.
    Best,
}

impl Quality {
    /// Every preset, fastest first.
    pub const ALL: [Quality; 3] = [Quality::Fast, Quality::Balanced, Quality::Best];

    /// The recipe ([`crate::Recipe`]'s grammar) the preset quantizes with.
    pub fn recipe(self) -> &'static str {
        match self {
            Quality::Fast => "int4_full",
            Quality::Balanced => "learned+search",
            Quality::Best => "gptq:learned+search",
        }
    }

    /// Tokens the model writes itself to calibrate on when no calibration text is given;
    /// `None`: the preset does not calibrate.
    pub fn self_calibration_tokens(self) -> Option<usize> {
        match self {
            Quality::Fast | Quality::Balanced => None,
            Quality::Best => Some(SELF_CALIBRATION_TOKENS),
        }
    }

    /// How the embeddings and output head are stored: both as q8_0. 4-bit embeddings
    /// ([`KeepAs::HeadQ8_0`]) cost tiny-lite 0.004 to 0.007 bits per byte, above the noise
    /// floor of 0.002 to 0.003 (docs/quality.md).
    pub fn keep_as(self) -> KeepAs {
        KeepAs::Q8_0
    }

    /// The preset with a front end's explicit settings in place of its parts: a recipe
    /// replaces the preset's, a storage its embeddings' and head's, and any calibration asked
    /// for (a text, or self-generated of another size) its self-calibration.
    pub fn apply<'a>(
        self,
        recipe: Option<&'a str>,
        keep_as: Option<KeepAs>,
        calibration: Option<Setting>,
    ) -> Applied<'a> {
        Applied {
            recipe: recipe.unwrap_or(self.recipe()),
            keep_as: keep_as.unwrap_or(self.keep_as()),
            self_calibration_tokens: match calibration {
                Some(_) => None,
                None => self.self_calibration_tokens(),
            },
        }
    }

    /// The preset's name (`fast`, `balanced`, `best`).
    pub fn name(self) -> &'static str {
        match self {
            Quality::Fast => "fast",
            Quality::Balanced => "balanced",
            Quality::Best => "best",
        }
    }
}

/// A preset's settings after the explicit ones ([`Quality::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied<'a> {
    /// The recipe to convert with.
    pub recipe: &'a str,
    /// How the embeddings and output head are stored.
    pub keep_as: KeepAs,
    /// Tokens of self-generated calibration text to add; `None` when the preset does not
    /// calibrate or a calibration was asked for explicitly.
    pub self_calibration_tokens: Option<usize>,
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Quality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Quality::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| format!("unknown quality '{s}' (fast, balanced, best)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recipe;

    #[test]
    fn names_round_trip_and_recipes_parse() {
        for q in Quality::ALL {
            assert_eq!(q.to_string().parse::<Quality>(), Ok(q));
            let recipe: Recipe = q.recipe().parse().expect("a preset's recipe parses");
            // A recipe that needs calibration gets it from the preset itself.
            assert_eq!(recipe.gptq, q.self_calibration_tokens().is_some(), "{q}");
        }
        let err = "good".parse::<Quality>().unwrap_err();
        assert!(err.contains("fast, balanced, best"), "{err}");
    }

    #[test]
    fn explicit_settings_replace_the_presets_parts() {
        let best = Quality::Best.apply(None, None, None);
        assert_eq!(best.recipe, "gptq:learned+search");
        assert_eq!(best.keep_as, KeepAs::Q8_0);
        assert_eq!(best.self_calibration_tokens, Some(SELF_CALIBRATION_TOKENS));
        // A calibration text replaces the self-generated one; the recipe stays.
        let file = Quality::Best.apply(None, None, Some(Setting::Calibration));
        assert_eq!(file.self_calibration_tokens, None);
        assert_eq!(file.recipe, "gptq:learned+search");
        let own = Quality::Fast.apply(Some("nf4"), Some(KeepAs::Source), None);
        assert_eq!((own.recipe, own.keep_as), ("nf4", KeepAs::Source));
        assert_eq!(own.self_calibration_tokens, None);
    }

    #[test]
    fn default_is_balanced() {
        assert_eq!(Quality::default(), Quality::Balanced);
    }
}
