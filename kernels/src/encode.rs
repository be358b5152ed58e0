//! The block encoder of the converter on the best available path: [`Encoder`] implements
//! [`tquant_formats::BlockEncode`], so
//! `BlockQuantizer::quantize_with_kernels(.., &Encoder::detect())` writes the same codes as
//! the portable encoder, faster. The scalar path is `tquant_formats::encode`'s portable one;
//! the AVX-512 and AVX2 paths are in `x86_64/encode.rs`.

use crate::{Isa, KernelError};
use tquant_formats::encode::{block_extreme, encode_scaled_portable, BlockEncode, EncodeTable};

/// The encoder on one [`Isa`] (`reference` and `scalar` both run the portable encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    isa: Isa,
}

impl Encoder {
    /// The encoder on [`Isa::detect`]'s path.
    pub fn detect() -> Self {
        Self { isa: Isa::detect() }
    }

    /// The encoder on `isa`; an error if this CPU lacks it.
    pub fn new(isa: Isa) -> Result<Self, KernelError> {
        if !isa.is_available() {
            return Err(KernelError::Unavailable { isa });
        }
        Ok(Self { isa })
    }

    /// The path it runs on.
    pub fn isa(self) -> Isa {
        self.isa
    }
}

impl BlockEncode for Encoder {
    fn extreme(&self, block: &[f32]) -> (f32, f32) {
        match self.isa {
            // SAFETY: `new` and `detect` only build an encoder on an ISA this CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { crate::x86_64::encode::extreme_avx512(block) },
            // AVX2's max and min are what the portable loop compiles to.
            _ => block_extreme(block),
        }
    }

    fn encode_scaled(&self, table: &EncodeTable, block: &[f32], scale: f32, out: &mut [u8]) {
        match self.isa {
            Isa::Reference | Isa::Scalar => encode_scaled_portable(table, block, scale, out),
            // SAFETY: `new` and `detect` only build an encoder on an ISA this CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe {
                crate::x86_64::encode::encode_avx512(table, block, scale, out)
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { crate::x86_64::encode::encode_avx2(table, block, scale, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => encode_scaled_portable(table, block, scale, out),
        }
    }
}
