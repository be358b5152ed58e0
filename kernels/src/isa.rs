//! The kernel paths: the instruction sets ([`Isa`], CPU features detected once per process), the
//! row-kernel signatures every path implements and the activations they take.

use crate::act::FastActs;
use crate::{KernelError, QMatrix};
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Whether each x86-64 path is built (a path is listed as available only when it is).
#[cfg(target_arch = "x86_64")]
const AVX2_READY: bool = true;
#[cfg(target_arch = "x86_64")]
const AVX512_READY: bool = true;

/// An implementation of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// The oracle: plain loops, f64 sums. Single-threaded and slow.
    Reference,
    /// Portable Rust, vectorized by the compiler for the build target.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64).
    Avx2,
    /// AVX-512 F + BW + VL + VNNI (x86-64).
    Avx512,
}

#[derive(Debug, Clone, Copy)]
struct Features {
    avx2: bool,
    avx512: bool,
}

fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c");
            let avx512 = avx2
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vnni");
            Features {
                avx2: avx2 && AVX2_READY,
                avx512: avx512 && AVX512_READY,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Features {
            avx2: false,
            avx512: false,
        }
    })
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Reference, Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The path's name (`reference`, `scalar`, `avx2`, `avx512`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Reference => "reference",
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU runs this path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Reference | Isa::Scalar => true,
            Isa::Avx2 => features().avx2,
            Isa::Avx512 => features().avx512,
        }
    }

    /// Every path this CPU runs, slowest first (the reference and scalar always).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The path [`crate::matmul`] uses: the fastest available, or the one named by the environment
    /// variable `TQUANT_ISA` when it is available. Decided once per process.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("TQUANT_ISA")
                .ok()
                .and_then(|s| s.parse::<Isa>().ok())
                .filter(|i| i.is_available());
            forced.unwrap_or_else(|| *Isa::available().last().unwrap_or(&Isa::Scalar))
        })
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| KernelError::UnknownIsa { name: s.into() })
    }
}

/// Activations prepared for one call.
pub(crate) enum Acts<'x> {
    Exact(std::borrow::Cow<'x, [f32]>),
    Fast(Box<FastActs>),
}

/// A row kernel: rows `r0..r0 + out.len() / n` into `out` (`[row][j]`). Unsafe because SIMD
/// kernels may only run where their ISA is available.
pub(crate) type QRows = unsafe fn(&QMatrix, &Acts, usize, usize, &mut [f32]);
pub(crate) type F32Rows = unsafe fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

/// bf16-weight products' activations prepared for one call.
pub(crate) enum Bf16Acts<'x> {
    /// f32 values for the widening kernels (`x` itself, or rounded to bf16 in fast mode).
    Wide(std::borrow::Cow<'x, [f32]>),
    /// bf16 bits for the `vdpbf16ps` kernel.
    Bits(Vec<u16>),
}

/// A row kernel: rows `r0..r0 + out.len() / n` into `out` (`[row][j]`). Unsafe because SIMD
/// kernels may only run where their ISA is available.
pub(crate) type Bf16Rows = unsafe fn(&[u16], usize, &Bf16Acts, usize, usize, &mut [f32]);
