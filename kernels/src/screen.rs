//! The candidate-scale screen of [`tquant_formats::ScaleRule::Search`] on the best available
//! path: [`ScaleScreen`] implements [`tquant_formats::Screen`], so
//! `BlockQuantizer::quantize_with_screen(.., &ScaleScreen::detect())` picks the same scales as
//! the portable search, faster. The scalar path is `tquant_formats::screen::screen_portable`;
//! the AVX-512 and AVX2 paths are in `x86_64/screen.rs`.

use crate::{Isa, KernelError};
use tquant_formats::screen::{screen_portable, Screen, ScreenJob};

/// The screen on one [`Isa`] (`reference` and `scalar` both run the portable screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleScreen {
    isa: Isa,
}

impl ScaleScreen {
    /// The screen on [`Isa::detect`]'s path.
    pub fn detect() -> Self {
        Self { isa: Isa::detect() }
    }

    /// The screen on `isa`; an error if this CPU lacks it.
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

impl Screen for ScaleScreen {
    fn screen(&self, job: &ScreenJob<'_>, out: &mut [f32]) {
        match self.isa {
            Isa::Reference | Isa::Scalar => screen_portable(job, out),
            // SAFETY: `new` and `detect` only build a screen on an ISA this CPU has.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { crate::x86_64::screen::screen_avx512(job, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { crate::x86_64::screen::screen_avx2(job, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => screen_portable(job, out),
        }
    }
}
