//! tquant-kernels: fused dequant-matmul on the CPU for any 4-bit (or smaller) codebook.
//!
//! A [`QMatrix`] borrows a quantized weight `W` (`[rows, cols]`, out x in) in tquant's layout
//! (see `tquant_formats::pack`): packed codes, one scale per block of `block` elements along
//! each row, and the codebook as a table of up to 16 values. Nothing is copied, so a view over a
//! memory-mapped checkpoint costs nothing. [`matmul`] computes `y = x W^T` for `n` activation
//! rows (`x: [n, cols]`, `y: [n, rows]`, row-major f32): `n = 1` is a GEMV (decode), `n > 1` a
//! GEMM (prefill) that reuses each decoded weight block over several activation rows.
//!
//! # Modes and their error budgets
//! - [`Mode::Exact`]: codebook values and scales in f32, f32 accumulation. Against the
//!   [`reference`] (f64), `|y - y_ref| <= exact_budget(cols) * sum_k |w_k x_k|`.
//! - [`Mode::Fast`]: ggml IQ4_NL-style integer arithmetic. The table becomes int8 (exactly when
//!   its values are small integer multiples of one step, as for int4, E2M1, E3M0 and APoT, else
//!   rounded to the step, at most `max|t| / 64`, of least squared error over the table); each 32-element piece of every weight block of `x` is
//!   quantized to int8 with its own scale (`amax / 127`, round to nearest even); products are
//!   summed in int32 (VNNI where present) and rescaled in f32. The int8 arithmetic is defined
//!   exactly by [`reference`] (`Mode::Fast`), which every path matches within
//!   `fast_budget(cols) * sum_k |w_k x_k|`. Against exact arithmetic the error is bounded by
//!   [`reference::fast_error_bound`] (half a table step times `|x|` plus half an activation
//!   step times `|w|`, per term); on Gaussian data it is 0.5-0.8% of `|y|` RMS
//!   (tested: [`FAST_RMS_BUDGET`]).
//!
//! # Paths and dispatch
//! [`Isa`] names each implementation: `reference` (obvious, slow, the oracle), `scalar`
//! (portable), `avx2` (AVX2 + FMA + F16C) and `avx512` (F, BW, VL, VNNI). CPU features are
//! detected once per process ([`Isa::detect`]; the environment variable `TQUANT_ISA` may name
//! an available path instead); [`matmul`] uses the detected path, [`matmul_with`] a chosen one
//! (tests and benches). Nothing depends on `target-cpu`: SIMD code is compiled with
//! `#[target_feature]` and chosen at run time. Block sizes that are neither 16, a multiple of
//! 32 nor a whole row run on the scalar path whatever the ISA (their pieces do not line up with
//! vector lanes); every tquant and peer format uses one of the fast shapes.
//!
//! How the SIMD paths work (details in `x86_64/avx512.rs`):
//! - fast: `vpshufb` decodes 128 codes per 64 bytes through the int8 table, `vpdpbusd` (or
//!   `vpmaddubsw` on AVX2) dots them with int8 activations laid out to match the nibbles, and
//!   one convert + FMA per 128 elements applies the block and activation scales. A row that
//!   ends inside a chunk runs it whole: zero activations past the end, its codes copied into a
//!   zero-padded buffer.
//! - exact: `vpermps` decodes 16 codes at a time through the f32 table pre-multiplied by the
//!   block scale; elements past the last whole group of 32 are decoded once per tile row and
//!   reused for every activation row.
//! - A GEMV works on 4 weight rows at a time and prefetches the next 4 (a row of 8192 codes is
//!   one 4 KiB page, where hardware prefetchers stop); a GEMM on tiles of 4 weight rows x 4
//!   activation rows (2 x 4 on AVX2), so each decoded weight chunk serves 4 activation rows.
//! - A fast-mode GEMM of 8 or more activation rows whose blocks are a multiple of 32 (or one
//!   per row) is cache-blocked (`panel`): the activations are quantized once, in panels of up
//!   to 255 rows that stay in L2; each tile of 4 weight rows is decoded to int8 once per panel
//!   and a 4 x 3 micro-kernel (`vpdpbusd`; AVX2: 2 x 2, `vpmaddubsw`) runs over it, each int32
//!   lane summing one 32-element piece so the scales cost one multiply and one FMA per 16
//!   pieces. The portable path has the same loop nest (`panel::micro_scalar`).
//!
//! # Threads
//! Output rows are split over the current rayon thread pool. To choose the number of threads,
//! call from inside `rayon::ThreadPoolBuilder::new().num_threads(t).build()?.install(|| ...)`
//! (or set `RAYON_NUM_THREADS` for the global pool); products under [`PARALLEL_MIN_WORK`]
//! multiply-adds stay on the calling thread. Results do not depend on the number of threads.
//!
//! [`matmul_f32`] is the dense f32 product written with the same care (same dispatch, same
//! threading): the path for unquantized weights and the honest baseline for benchmarks.
//! [`matmul_bf16`] multiplies by bf16 weights without widening them in memory (see [`bf16`]),
//! [`matmul_f16`] by IEEE f16 weights the same way (see [`f16`]);
//! [`matmul_q8_0`] by 8-bit q8_0 weights (ggml's Q8_0; see [`int8`]).
//!
//! ```
//! use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
//! use tquant_kernels::{matmul, Mode, QMatrix};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (rows, cols) = (4, 64);
//! let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
//! let nf4: Format = "nf4".parse()?;
//! let quantizer = BlockQuantizer {
//!     block: BlockSize::Elements(32),
//!     scale_dtype: ScaleDtype::F16,
//! };
//! let q = quantizer.quantize(nf4.codebook(), &w, rows, cols)?;
//! let view = QMatrix::from_quantized(&q, nf4.codebook().values())?;
//! let x = vec![1.0f32; cols];
//! let mut y = vec![0.0f32; rows];
//! matmul(&view, &x, 1, &mut y, Mode::Exact)?;
//! // With x all ones, each output is the sum of its dequantized weight row.
//! let deq = q.dequantize(nf4.codebook());
//! for (r, &out) in y.iter().enumerate() {
//!     let want: f32 = deq[r * cols..(r + 1) * cols].iter().sum();
//!     assert!((out - want).abs() < 1e-4, "{out} {want}");
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod act;
pub mod bf16;
mod dispatch;
pub mod encode;
pub mod f16;
pub mod int8;
mod isa;
pub mod mapping;
mod panel;
mod panel_layout;
mod q8;
mod qmatrix;
pub mod reference;
mod scalar;
pub mod screen;
mod shared_out;
mod widen;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use bf16::{bf16_bits, bf16_dot_available, matmul_bf16, matmul_bf16_with, BF16_FAST_REL};
pub use dispatch::{matmul, matmul_f32, matmul_f32_with, matmul_with, PARALLEL_MIN_WORK};
pub use encode::Encoder;
pub use f16::{matmul_f16, matmul_f16_with};
pub use int8::{matmul_q8_0, matmul_q8_0_with, Q8Matrix};
pub use isa::Isa;
pub use qmatrix::{QMatrix, QMatrixParts, RowTables, RowTablesRef};
pub use screen::ScaleScreen;
pub use tquant_formats::ScaleDtype;

use std::fmt;
use std::str::FromStr;

/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// Exact mode's budget: `|y - y_ref| <= exact_budget(cols) * sum_k |w_k x_k|` for every output.
///
/// Worst-case f32 rounding: every path sums a row in at least 8 independent lanes (16 on
/// AVX-512 and scalar), so a term passes through at most `cols / 8` sequential additions, plus
/// the products, the block-scaled table and the final reductions (32 more roundings).
pub fn exact_budget(cols: usize) -> f64 {
    (cols as f64 / 8.0 + 32.0) * U
}

/// Fast mode's budget against the reference's int8 arithmetic (`Mode::Fast` there):
/// `|y - y_ref| <= fast_budget(cols) * sum_k |w_k x_k|`. The integer dot products are exact;
/// only the f32 rescaling and summation of one term per 32-element piece round (at most
/// `cols / 32` sequential additions on the scalar path, fewer on SIMD ones), with 10% slack
/// because the quantized terms may exceed `|w_k x_k|` a little.
pub fn fast_budget(cols: usize) -> f64 {
    1.1 * (cols as f64 / 32.0 + 32.0) * U
}

/// Fast mode against exact arithmetic on Gaussian weights and activations: RMS error over the
/// outputs at most this fraction of the outputs' RMS (measured: 0.5-0.8%).
pub const FAST_RMS_BUDGET: f64 = 0.02;

/// Length of the activation pieces the fast mode quantizes with one int8 scale (ggml's Q8_0
/// uses 32 as well). A weight block shorter than this is one piece.
pub const ACT_BLOCK: usize = 32;

/// Arithmetic of a dequant-matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Codebook values in f32, f32 accumulation.
    Exact,
    /// int8 codebook, int8 activations per 32-element piece, int32 dot products, f32 rescale.
    Fast,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Exact, Mode::Fast];

    /// The mode's name (`exact`, `fast`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Exact => "exact",
            Mode::Fast => "fast",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| KernelError::UnknownMode { name: s.into() })
    }
}

/// Errors of the kernel layer: a view or a buffer whose size does not match its shape, a path
/// this CPU lacks, or a name that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A block length of 0.
    #[error("block length must be at least 1")]
    ZeroBlock,
    /// A shape whose element count overflows `usize`.
    #[error("shape [{rows}, {cols}] is too large to address")]
    Overflow {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// Packed codes of the wrong length for their matrix.
    #[error("packed codes: {got} bytes, but a [{rows}, {cols}] matrix needs {want}")]
    CodesLength {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        want: usize,
    },
    /// Scales of the wrong length for their matrix.
    #[error("scales: {got} bytes, but [{rows}, {blocks}] {dtype} scales need {want}")]
    ScalesLength {
        /// Rows.
        rows: usize,
        /// Blocks per row.
        blocks: usize,
        /// The scales' dtype.
        dtype: ScaleDtype,
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        want: usize,
    },
    /// A codebook table of 0 or more than 16 values.
    #[error("codebook table has {0} values; 1 to 16 are supported")]
    TableSize(usize),
    /// A codebook value that is NaN or infinite.
    #[error("codebook value {index} is not finite ({value})")]
    TableValue {
        /// Its code.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An activation, weight or output buffer whose length does not match the shape.
    #[error("{what}: {got} values, but the shape needs {want}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Values given.
        got: usize,
        /// Values needed.
        want: usize,
    },
    /// A path this CPU cannot run.
    #[error("{isa} is not available on this CPU")]
    Unavailable {
        /// The path asked for.
        isa: Isa,
    },
    /// A mode name other than `exact` or `fast`.
    #[error("unknown mode '{name}' (exact, fast)")]
    UnknownMode {
        /// The name given.
        name: String,
    },
    /// A path name other than `reference`, `scalar`, `avx2` or `avx512`.
    #[error("unknown ISA '{name}' (reference, scalar, avx2, avx512)")]
    UnknownIsa {
        /// The name given.
        name: String,
    },
}
