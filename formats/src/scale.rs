//! Scale dtypes: how a block's scale is rounded and stored.

use crate::FormatError;
use half::{bf16, f16};
use std::fmt;
use std::str::FromStr;

/// How per-block scales are stored. Bytes are little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleDtype {
    /// IEEE single precision, 4 bytes.
    F32,
    /// IEEE half precision, 2 bytes.
    F16,
    /// bfloat16, 2 bytes.
    Bf16,
    /// OCP MX E8M0: a biased power-of-two exponent in one byte, `2^(byte - 127)`; 255 is NaN.
    E8m0,
    /// OCP FP8 E4M3 (`float8_e4m3fn`, NVFP4's block scale): sign, 4 exponent bits (bias 7),
    /// 3 mantissa bits; largest 448, no infinities, 0x7F / 0xFF are NaN.
    E4m3,
}

impl ScaleDtype {
    /// Every dtype.
    pub const ALL: [ScaleDtype; 5] = [Self::F32, Self::F16, Self::Bf16, Self::E8m0, Self::E4m3];

    /// Bytes one scale takes.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::E8m0 | Self::E4m3 => 1,
        }
    }

    /// Lowercase name, as on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::E8m0 => "e8m0",
            Self::E4m3 => "e4m3",
        }
    }

    /// Rounds an ideal scale (finite; negative for tables with a one-sided extreme) to this dtype.
    ///
    /// f16, bf16 and E4M3 round to nearest even and saturate at their largest finite magnitude
    /// (E4M3 as compressed-tensors does: clamp to ±448, then cast). E8M0
    /// has no sign: it takes positive scales only. E8M0
    /// follows OCP MX: `2^(floor(log2(absmax)) - emax)` with `emax = floor(log2(max|values|))`,
    /// so pass `absmax` and the codebook's `max_abs` through [`ScaleDtype::e8m0_exponent`] instead.
    pub fn round(self, scale: f32) -> f32 {
        match self {
            Self::F32 => scale,
            Self::F16 => f16::from_f32(scale).clamp(f16::MIN, f16::MAX).to_f32(),
            Self::Bf16 => bf16::from_f32(scale).clamp(bf16::MIN, bf16::MAX).to_f32(),
            Self::E4m3 => e4m3_to_f32(f32_to_e4m3(scale)),
            Self::E8m0 => {
                if scale <= 0.0 || !scale.is_finite() {
                    return e8m0_to_f32(0);
                }
                e8m0_to_f32((floor_log2(scale) + 127).clamp(0, 254) as u8)
            }
        }
    }

    /// Appends the stored bytes of `scale` (already rounded by [`ScaleDtype::round`]).
    pub fn push_bytes(self, scale: f32, out: &mut Vec<u8>) {
        match self {
            Self::F32 => out.extend_from_slice(&scale.to_le_bytes()),
            Self::F16 => out.extend_from_slice(&f16::from_f32(scale).to_le_bytes()),
            Self::Bf16 => out.extend_from_slice(&bf16::from_f32(scale).to_le_bytes()),
            Self::E8m0 => out.push(f32_to_e8m0(scale)),
            Self::E4m3 => out.push(f32_to_e4m3(scale)),
        }
    }

    /// Reads scale `i` from stored bytes. Panics if `bytes` is too short; readers check lengths first.
    #[inline]
    pub fn read(self, bytes: &[u8], i: usize) -> f32 {
        match self {
            Self::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()),
            Self::F16 => f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
            Self::Bf16 => bf16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
            Self::E8m0 => e8m0_to_f32(bytes[i]),
            Self::E4m3 => e4m3_to_f32(bytes[i]),
        }
    }

    /// OCP MX shared exponent for a block: `floor(log2(absmax)) - floor(log2(max_abs))`.
    /// Both logarithms come from the floats' exponent bits (as torchao does): a rounded `log2`
    /// would put an `absmax` one ulp below a power of two into the next binade.
    pub fn e8m0_exponent(absmax: f32, max_abs: f32) -> i32 {
        (floor_log2(absmax) - floor_log2(max_abs)).clamp(-127, 127)
    }
}

/// `floor(log2(x))` of a positive finite f32, exactly, from its bits (subnormals included).
/// Returns -150 for zero and 128 for infinity or NaN, which every caller clamps.
pub fn floor_log2(x: f32) -> i32 {
    let bits = x.abs().to_bits();
    let biased = (bits >> 23) as i32;
    if biased == 0xff {
        return 128;
    }
    if biased != 0 {
        return biased - 127;
    }
    let mantissa = bits & 0x7f_ffff;
    if mantissa == 0 {
        -150
    } else {
        (31 - mantissa.leading_zeros() as i32) - 149
    }
}

/// `2^(byte - 127)`; 255 is NaN (OCP MX).
#[inline]
pub fn e8m0_to_f32(byte: u8) -> f32 {
    match byte {
        255 => f32::NAN,
        0 => f32::from_bits(1 << 22), // 2^-127 is an f32 subnormal
        b => f32::from_bits((b as u32) << 23),
    }
}

/// The E8M0 byte of a power of two (the exponent of `x`, truncated toward zero).
pub fn f32_to_e8m0(x: f32) -> u8 {
    if x.is_nan() {
        return 255;
    }
    if x <= e8m0_to_f32(0) {
        return 0;
    }
    (floor_log2(x) + 127).clamp(0, 254) as u8
}

/// Largest finite E4M3 magnitude (0x7E, 1.75 · 2^8).
pub const E4M3_MAX: f32 = 448.0;

/// The value of an E4M3 (`float8_e4m3fn`) byte: exact in f32; 0x7F and 0xFF are NaN.
#[inline]
pub fn e4m3_to_f32(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let (e, m) = ((byte >> 3) & 0x0f, byte & 0x07);
    if e == 0x0f && m == 0x07 {
        return f32::NAN;
    }
    let mag = if e == 0 {
        m as f32 * (1.0 / 512.0) // subnormal: m/8 · 2^-6
    } else {
        f32::from_bits(((e as u32 + 120) << 23) | ((m as u32) << 20))
    };
    sign * mag
}

/// The E4M3 byte nearest `x`, ties to even, saturating at ±448 (compressed-tensors clamps to
/// `finfo(float8_e4m3fn)` before torch's cast); NaN gives 0x7F, and the sign of a zero is kept.
pub fn f32_to_e4m3(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs().min(E4M3_MAX);
    // Below 2^-6 the step is 2^-9 (subnormals); above, 2^(e - 3) in binade e. Both scalings are
    // by powers of two, so exact, and `round_ties_even` is the only rounding.
    let e = floor_log2(a).max(-6);
    let step = f32::from_bits(((e - 3 + 127) as u32) << 23);
    let q = (a / step).round_ties_even() as u32; // 0..=16 (8..=16 for normal binades)
                                                 // In binade -6 the subnormals (q < 8) continue the codes below the normals: code = q.
    let code = (((e + 7) as u32) << 3) + q - 8;
    sign | code.min(0x7e) as u8
}

impl fmt::Display for ScaleDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScaleDtype {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| FormatError::UnknownScaleDtype { name: s.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_round_trips_every_finite_byte() {
        for b in 0..=254u8 {
            let x = e8m0_to_f32(b);
            assert!(x > 0.0 && x.is_finite());
            assert_eq!(f32_to_e8m0(x), b);
        }
        assert!(e8m0_to_f32(255).is_nan());
    }

    #[test]
    fn floor_log2_is_exact_at_binade_edges() {
        for e in -149..=127 {
            let p = if e >= -126 {
                f32::from_bits(((e + 127) as u32) << 23)
            } else {
                f32::from_bits(1 << (e + 149))
            };
            assert_eq!(floor_log2(p), e, "2^{e}");
            let below = f32::from_bits(p.to_bits() - 1);
            assert_eq!(floor_log2(below), e - 1, "just below 2^{e}");
        }
        assert_eq!(floor_log2(6.0), 2);
        assert_eq!(
            ScaleDtype::e8m0_exponent(f32::from_bits(8f32.to_bits() - 1), 6.0),
            0
        );
    }

    #[test]
    fn e4m3_round_trips_every_finite_byte() {
        for b in 0..=255u8 {
            let x = e4m3_to_f32(b);
            if b & 0x7f == 0x7f {
                assert!(x.is_nan());
                continue;
            }
            assert_eq!(f32_to_e4m3(x), b, "{b:#04x} = {x}");
        }
        assert_eq!(e4m3_to_f32(0x7e), E4M3_MAX);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f32_to_e4m3(1e9), 0x7e);
        assert_eq!(f32_to_e4m3(-1e9), 0xfe);
    }

    #[test]
    fn stored_bytes_read_back() {
        for d in ScaleDtype::ALL {
            let s = d.round(0.3);
            let mut v = Vec::new();
            d.push_bytes(s, &mut v);
            d.push_bytes(s, &mut v);
            assert_eq!(v.len(), 2 * d.size());
            assert_eq!(d.read(&v, 1), s);
        }
    }
}
