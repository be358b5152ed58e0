//! bf16 <-> f32 bit conversions, shared by the bf16 products and their reference.

/// f32 value of bf16 bits.
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// bf16 bits of `v`, rounded to nearest even (NaN stays NaN).
#[inline]
pub fn f32_to_bf16(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

/// f32 value of IEEE binary16 bits (exact: every f16, subnormals included, is an f32).
#[inline(always)]
pub fn f16_to_f32(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

/// IEEE binary16 bits of `v`, rounded to nearest even (out of range: infinity).
#[inline]
pub fn f32_to_f16(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// The 16-bit float encodings the half-width weight kernels read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    /// bfloat16: the top half of an f32.
    Bf16,
    /// IEEE binary16.
    F16,
}

impl Half {
    /// One stored weight as f32.
    #[inline(always)]
    pub(crate) fn to_f32(self, b: u16) -> f32 {
        match self {
            Half::Bf16 => bf16_to_f32(b),
            Half::F16 => f16_to_f32(b),
        }
    }
}
