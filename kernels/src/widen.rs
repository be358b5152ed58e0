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
