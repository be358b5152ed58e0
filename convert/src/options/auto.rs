//! `auto[:LIST]`'s candidates as options: parsing, canonical names and what a layout can
//! store. Quantizing with them is the `auto` module.

use super::NuChoice;
use crate::error::{AutoListError, ConvertError};
use crate::schema::Layout;
use tquant_formats::{BlockQuantizer, Format, FormatError, ScaleDtype};

/// The format name that asks for a per-matrix choice; `auto:LIST` names the candidates.
pub const AUTO: &str = "auto";

/// The candidates of plain `auto`: the 4-bit formats with the least error on tiny-lite's weights
/// and on N(0,1) (docs/formats.md): nf4, Student Float with nu searched per matrix, the two
/// super-precision types, symmetric INT4 and full-range INT4 (with its signed scale the best
/// fixed format on tiny-lite). `int4_full` needs a signed scale and is left out with e8m0 scales.
pub const DEFAULT_CANDIDATES: [&str; 6] =
    ["nf4", "sf4", "apot4_sp", "e2m1_sp", "int4", "int4_full"];
/// One format `auto` may choose.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    /// A fixed codebook (any catalog name, `sf4:nu=X`, `custom:...`).
    Fixed(Format),
    /// Student Float with nu chosen per matrix: [`NuChoice::Fit`] or [`NuChoice::Search`].
    StudentFloat {
        /// Bits per code.
        bits: u32,
        /// How nu is chosen per matrix.
        nu: NuChoice,
    },
}

impl Candidate {
    /// Parses one list entry. `sf4` / `sf3` take `plain_sf` (fit or search); `sf4_fit`,
    /// `sf4_search` (and the sf3 ones) say it themselves; `sf4:nu=X` is a fixed table.
    pub fn parse(s: &str, plain_sf: NuChoice) -> Result<Self, FormatError> {
        let sf = |bits, nu| Ok(Self::StudentFloat { bits, nu });
        match s {
            "sf4" => sf(4, plain_sf),
            "sf3" => sf(3, plain_sf),
            "sf4_fit" => sf(4, NuChoice::Fit),
            "sf3_fit" => sf(3, NuChoice::Fit),
            "sf4_search" => sf(4, NuChoice::Search),
            "sf3_search" => sf(3, NuChoice::Search),
            other => other.parse().map(Self::Fixed),
        }
    }

    /// The canonical name, which [`Candidate::parse`] reads back to the same candidate.
    pub fn name(&self) -> String {
        match self {
            Self::Fixed(f) => f.name().to_string(),
            Self::StudentFloat { bits, nu } => match nu {
                NuChoice::Fit => format!("sf{bits}_fit"),
                NuChoice::Search => format!("sf{bits}_search"),
                NuChoice::Fixed(v) => format!("sf{bits}:nu={v}"),
            },
        }
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        match self {
            Self::Fixed(f) => f.bits(),
            Self::StudentFloat { bits, .. } => *bits,
        }
    }

    /// A representative table, for checks that only depend on its shape (bits, signedness).
    pub(crate) fn base_format(&self) -> Format {
        match self {
            Self::Fixed(f) => f.clone(),
            Self::StudentFloat { bits, .. } => Format::student_float(*bits, 5.0)
                .expect("Student Float with 3 or 4 bits and nu = 5 exists"),
        }
    }

    /// The longest format name a matrix can record for this candidate.
    fn widest_name(&self) -> String {
        match self {
            Self::Fixed(f) => f.name().to_string(),
            // nu is rounded to 3 decimals and at most NU_MAX = 1000.
            Self::StudentFloat { bits, .. } => format!("sf{bits}:nu=999.999"),
        }
    }
}

/// The candidates of an `auto[:LIST]` format.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoSpec {
    /// The candidates, in the order that breaks ties.
    pub candidates: Vec<Candidate>,
}

/// True for `auto` and `auto:LIST`.
pub fn is_auto(format: &str) -> bool {
    format == AUTO || format.starts_with("auto:")
}

/// Splits a candidate list on `/` when it has one (so `custom:` tables, which contain commas,
/// can be listed), else on `,`.
fn split_candidates(list: &str) -> Vec<&str> {
    let sep = if list.contains('/') { '/' } else { ',' };
    list.split(sep)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

impl AutoSpec {
    /// Parses `auto` or `auto:LIST` with the `--nu` for plain `sf4` / `sf3` entries (`fit` or
    /// `search`; default `search`). Plain `auto` drops the defaults `scale_dtype` cannot store
    /// (`int4_full` with e8m0); an explicit list is taken as written and checked later.
    pub fn parse(
        format: &str,
        nu: Option<&str>,
        scale_dtype: ScaleDtype,
    ) -> Result<Self, ConvertError> {
        let plain_sf = match nu {
            None | Some("search") => NuChoice::Search,
            Some("fit") => NuChoice::Fit,
            Some(v) => {
                return Err(ConvertError::AutoNu {
                    value: v.to_string(),
                })
            }
        };
        let (names, default) = match format {
            AUTO => (DEFAULT_CANDIDATES.to_vec(), true),
            f => match f.strip_prefix("auto:") {
                Some(list) => (split_candidates(list), false),
                None => {
                    return Err(ConvertError::NotAutoFormat {
                        format: f.to_string(),
                    })
                }
            },
        };
        if nu.is_some() && !names.iter().any(|n| matches!(*n, "sf4" | "sf3")) {
            return Err(ConvertError::AutoNuUnused {
                format: format.to_string(),
            });
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        for name in names {
            let c =
                Candidate::parse(name, plain_sf).map_err(|source| ConvertError::AutoCandidate {
                    format: format.to_string(),
                    candidate: name.to_string(),
                    source,
                })?;
            if candidates.contains(&c) {
                return Err(ConvertError::AutoDuplicate {
                    format: format.to_string(),
                    candidate: c.name(),
                });
            }
            candidates.push(c);
        }
        if default && scale_dtype == ScaleDtype::E8m0 {
            candidates.retain(|c| !c.base_format().codebook().needs_signed_scale());
        }
        let spec = Self { candidates };
        spec.check_bits()
            .map_err(|source| ConvertError::AutoList { source })?;
        Ok(spec)
    }

    /// Reads back a name written by [`AutoSpec::name`] (what a checkpoint's metadata holds).
    pub fn from_name(name: &str) -> Result<Self, AutoListError> {
        let list = match name {
            AUTO => return Err(AutoListError::Unlisted),
            n => n
                .strip_prefix("auto:")
                .ok_or_else(|| AutoListError::NotAuto {
                    name: n.to_string(),
                })?,
        };
        let candidates = split_candidates(list)
            .into_iter()
            .map(|c| {
                Candidate::parse(c, NuChoice::Search).map_err(|source| AutoListError::Candidate {
                    candidate: c.to_string(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = Self { candidates };
        spec.check_bits()?;
        Ok(spec)
    }

    fn check_bits(&self) -> Result<(), AutoListError> {
        let Some(first) = self.candidates.first() else {
            return Err(AutoListError::Empty);
        };
        if let Some(c) = self.candidates.iter().find(|c| c.bits() != first.bits()) {
            return Err(AutoListError::MixedBits {
                first: first.name(),
                first_bits: first.bits(),
                other: c.name(),
                other_bits: c.bits(),
            });
        }
        Ok(())
    }

    /// `auto:` and the canonical candidate names, joined by `,` (by `/` if one has a comma).
    pub fn name(&self) -> String {
        let names: Vec<String> = self.candidates.iter().map(Candidate::name).collect();
        let sep = if names.iter().any(|n| n.contains(',')) {
            "/"
        } else {
            ","
        };
        format!("auto:{}", names.join(sep))
    }

    /// Bits per code (every candidate has the same).
    pub fn bits(&self) -> u32 {
        self.candidates.first().map_or(4, Candidate::bits)
    }

    /// A representative format (the first candidate's table) for `ConvertOptions::format`.
    pub fn first_format(&self) -> Format {
        self.candidates
            .first()
            .map(Candidate::base_format)
            .expect("an AutoSpec has at least one candidate")
    }

    /// The longest format name any matrix can record (reserves header room before the choice).
    pub fn widest_format_name(&self) -> String {
        self.candidates
            .iter()
            .map(Candidate::widest_name)
            .max_by_key(String::len)
            .unwrap_or_default()
    }

    /// Checks that tquant's layout can store every candidate with this block and scale dtype.
    pub fn validate(&self, layout: Layout, q: &BlockQuantizer) -> Result<(), ConvertError> {
        if layout != Layout::Tquant {
            return Err(ConvertError::AutoLayout { layout });
        }
        self.check_bits()
            .map_err(|source| ConvertError::AutoList { source })?;
        for c in &self.candidates {
            q.check(c.base_format().codebook()).map_err(|source| {
                ConvertError::AutoCandidateStore {
                    candidate: c.name(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}
