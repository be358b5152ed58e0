//! The format catalog: every named format, its table in code order and where the table comes from.

use crate::generate::{quantile_table, NF3_OFFSET, SF4_OFFSET};
use crate::{Codebook, FormatError};
use std::fmt;
use std::str::FromStr;

/// bitsandbytes' NF4 table (`bitsandbytes/functional.py`, `get_4bit_type("nf4")`), code order;
/// the literals are kept as bitsandbytes prints them.
#[allow(clippy::excessive_precision)]
pub const NF4: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// SF4 with nu = 5 as the paper's code lists it (`weight_only.py`, `SF4_5`, 6 decimals).
pub const SF4_NU5: [f32; 16] = [
    -1.0, -0.627781, -0.454736, -0.334331, -0.237434, -0.152899, -0.074982, 0.0, 0.065513,
    0.132965, 0.204661, 0.283835, 0.375805, 0.491076, 0.656781, 1.0,
];

/// OCP E2M1 magnitudes (codes 0..7); bit 3 is the sign.
pub const E2M1_MAG: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
/// Intel neural-compressor's E2M1 (`fp4_e2m1`): subnormal 0.0625 instead of 0.5.
pub const E2M1_I_MAG: [f32; 8] = [0.0, 0.0625, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
/// The paper's E2M1-B (`fp4_e2m1_bnb`): bitsandbytes' fp4 values, in E2M1 sign-magnitude order.
pub const E2M1_B_MAG: [f32; 8] = [0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0];
/// E3M0 (`fp4_log`): powers of two.
pub const E3M0_MAG: [f32; 8] = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
/// APoT4 (`apot4`): sums of {0, 2^-1, 2^-2, 2^-4} and {0, 2^-3}, divided by 5/8.
pub const APOT4_MAG: [f32; 8] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0];
/// E2M0 (`fp3_log`, 3 bits).
pub const E2M0_MAG: [f32; 4] = [0.0, 1.0, 2.0, 4.0];

const PAPER: &str = "Dotzel et al., ICML 2024 (arXiv 2405.03103), Table 15; cornell-zhang/llm-datatypes weight_only.py";

/// Every fixed format name, in the order the paper's tables list them, then the extras.
pub const NAMES: [&str; 16] = [
    "nf4",
    "sf4",
    "int4",
    "e2m1_i",
    "e2m1_b",
    "e2m1",
    "e2m1_sr",
    "e2m1_sp",
    "e3m0",
    "apot4",
    "apot4_sp",
    "int4_full",
    "nf3",
    "sf3",
    "int3",
    "e2m0",
];

/// Formats derived from the catalog's by optimisation, listed after [`NAMES`] by
/// [`Format::listed`]: `sf4_opt` (Student Float's Lloyd-Max table for block-absmax-normalised
/// values, `sf4_opt:nu=X`).
pub const DERIVED_NAMES: [&str; 1] = ["sf4_opt"];

/// The default degrees of freedom of Student Float (the paper fixes nu = 5).
pub const DEFAULT_NU: f64 = 5.0;

/// A named format: a codebook and where its values come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    name: String,
    codebook: Codebook,
    source: &'static str,
    nu: Option<f64>,
}

impl Format {
    /// Every catalog format with its default parameters (custom codebooks excluded).
    pub fn all() -> Vec<Format> {
        NAMES
            .iter()
            .map(|n| n.parse().expect("catalog names parse"))
            .collect()
    }

    /// [`Format::all`], then the derived formats of [`DERIVED_NAMES`] (what `tquant formats`
    /// lists).
    pub fn listed() -> Vec<Format> {
        let mut all = Format::all();
        all.extend(
            DERIVED_NAMES
                .iter()
                .map(|n| n.parse::<Format>().expect("derived names parse")),
        );
        all
    }

    /// `sf4_opt` at `nu > 0`: the 16 values with the least mean squared error for blocks of 64
    /// Student-t (`nu`) values divided by their block's absmax, with -1 and +1 kept
    /// (Lloyd-Max, symmetric, from SF4's positive half of the same nu;
    /// [`crate::lloyd::block_absmax_lloyd_max`]).
    pub fn student_float_opt(nu: f64) -> Result<Format, FormatError> {
        if nu.is_nan() || nu <= 0.0 {
            return Err(FormatError::Nu { nu });
        }
        let name = if nu == DEFAULT_NU {
            "sf4_opt".to_string()
        } else if (1e-3..1e6).contains(&nu) {
            format!("sf4_opt:nu={nu}")
        } else {
            format!("sf4_opt:nu={nu:e}")
        };
        Ok(Format {
            name,
            codebook: Codebook::new(crate::lloyd::sf4_opt_table(nu)?)?,
            source: "Lloyd-Max table of Student-t (nu) values divided by their block's absmax: blocks of 64, symmetric, -1 and +1 fixed, from SF4's positive half (density by numerical integration; docs/formats.md)",
            nu: Some(nu),
        })
    }

    /// Student Float with `bits` (3 or 4) and any `nu > 0`.
    pub fn student_float(bits: u32, nu: f64) -> Result<Format, FormatError> {
        if nu.is_nan() || nu <= 0.0 {
            return Err(FormatError::Nu { nu });
        }
        let (n_pos, n_neg, base) = match bits {
            4 => (8, 7, "sf4"),
            3 => (4, 3, "sf3"),
            _ => return Err(FormatError::StudentFloatBits { bits }),
        };
        let values = if bits == 4 && nu == DEFAULT_NU {
            SF4_NU5.to_vec()
        } else {
            quantile_table(Some(nu), n_pos, n_neg, SF4_OFFSET)
        };
        let name = if nu == DEFAULT_NU {
            base.to_string()
        } else if (1e-3..1e6).contains(&nu) {
            format!("{base}:nu={nu}")
        } else {
            // Shortest round-trip digits with an exponent: `sf4:nu=1e300`, not 301 digits.
            format!("{base}:nu={nu:e}")
        };
        Ok(Format {
            name,
            codebook: Codebook::new(values)?,
            source: "Student's t quantiles, the paper's Algorithm 1 (bitsandbytes' create_normal_map with t.ppf); nu = 5 is the paper's SF4_5 literal",
            nu: Some(nu),
        })
    }

    /// A custom codebook from values in code order.
    pub fn custom(values: Vec<f32>) -> Result<Format, FormatError> {
        let name = format!(
            "custom:{}",
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(Format {
            name,
            codebook: Codebook::new(values)?,
            source: "user-supplied values",
            nu: None,
        })
    }

    /// The canonical name (`sf4`, `sf4:nu=3.5`, `custom:...`); parses back to the same format.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format's values in code order.
    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        self.codebook.bits()
    }

    /// Where the format comes from (paper, library, generator).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Degrees of freedom of a Student Float format.
    pub fn nu(&self) -> Option<f64> {
        self.nu
    }

    fn fixed(name: &str, values: Vec<f32>, source: &'static str) -> Result<Format, FormatError> {
        Ok(Format {
            name: name.to_string(),
            codebook: Codebook::new(values)?,
            source,
            nu: None,
        })
    }
}

fn with_code8(mut values: Vec<f32>, v: f32) -> Vec<f32> {
    values[8] = v;
    values
}

fn sign_mag(m: &[f32]) -> Vec<f32> {
    crate::generate::sign_magnitude(m)
}

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, param) = match s.split_once(':') {
            Some((b, p)) => (b, Some(p)),
            None => (s, None),
        };
        match (base, param) {
            ("sf4" | "sf3" | "sf4_opt", p) => {
                let nu = match p {
                    None => DEFAULT_NU,
                    Some(p) => {
                        let v =
                            p.strip_prefix("nu=")
                                .ok_or_else(|| FormatError::ParameterSyntax {
                                    base: base.into(),
                                    text: s.into(),
                                })?;
                        v.parse::<f64>().map_err(|_| FormatError::NuText {
                            text: s.into(),
                            value: v.into(),
                        })?
                    }
                };
                match base {
                    "sf4_opt" => Format::student_float_opt(nu),
                    "sf4" => Format::student_float(4, nu),
                    _ => Format::student_float(3, nu),
                }
            }
            ("custom", Some(list)) => {
                let values = list
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<f32>()
                            .map_err(|_| FormatError::CustomValue { value: v.into() })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Format::custom(values)
            }
            (_, Some(_)) => Err(FormatError::UnexpectedParameter {
                base: base.into(),
                text: s.into(),
            }),
            (name, None) => {
                let int = |lo: i32, zero_at_min: bool, n: usize| -> Vec<f32> {
                    // Two's complement codes; the paper's symmetric grids leave the most negative code at 0.
                    (0..n as i32)
                        .map(|c| if c < n as i32 / 2 { c } else { c - n as i32 })
                        .map(|v| if zero_at_min && v < lo { 0.0 } else { v as f32 })
                        .collect()
                };
                match name {
                    "nf4" => Format::fixed(name, NF4.to_vec(), "bitsandbytes get_4bit_type('nf4') (functional.py), bit for bit"),
                    "int4" => Format::fixed(name, int(-7, true, 16), "symmetric INT4 -7..7 (the paper's qdq_weight_sym: scale = absmax/7); two's complement codes, 0b1000 unused"),
                    "int4_full" => Format::fixed(name, int(-8, false, 16), "full-range INT4 -8..7, two's complement codes"),
                    "e2m1" => Format::fixed(name, sign_mag(&E2M1_MAG), "OCP Microscaling Formats v1.0, FP4 E2M1 (codes 0..7 = 0..6, bit 3 = sign); the paper's fp4_basic"),
                    "e2m1_i" => Format::fixed(name, sign_mag(&E2M1_I_MAG), PAPER),
                    "e2m1_b" => Format::fixed(name, sign_mag(&E2M1_B_MAG), PAPER),
                    "e2m1_sr" => Format::fixed(name, with_code8(sign_mag(&E2M1_MAG), 8.0), "E2M1 + super-range: +8 on the negative-zero code 0b1000 (paper's fp4_range)"),
                    "e2m1_sp" => Format::fixed(name, with_code8(sign_mag(&E2M1_MAG), 5.0), "E2M1 + super-precision: +5 on the negative-zero code 0b1000 (paper's fp4_prec2)"),
                    "e3m0" => Format::fixed(name, sign_mag(&E3M0_MAG), PAPER),
                    "apot4" => Format::fixed(name, sign_mag(&APOT4_MAG), PAPER),
                    "apot4_sp" => Format::fixed(name, with_code8(sign_mag(&APOT4_MAG), 0.5), "APoT4 + super-precision: +0.5 on the negative-zero code 0b1000 (paper's apot4-sp)"),
                    "nf3" => Format::fixed(name, quantile_table(None, 4, 3, NF3_OFFSET), "NormalFloat recipe with 4 positive, 3 negative values (paper's code, NF3)"),
                    "int3" => Format::fixed(name, int(-3, true, 8), "symmetric INT3 -3..3, two's complement codes, 0b100 unused"),
                    "e2m0" => Format::fixed(name, sign_mag(&E2M0_MAG), "3-bit logarithmic (paper's fp3_log)"),
                    _ => Err(FormatError::UnknownFormat { name: name.into() }),
                }
            }
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}
