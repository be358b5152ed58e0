//! The kernel benchmark `tquant bench` runs ([`kernel`]) and how it is printed ([`Results::table`],
//! [`Results::to_json`]); the criterion benchmarks of formats, kernels, converter and model are in
//! `benches/`.
//!
//! ```no_run
//! use tquant_bench::kernel::{self, Spec};
//! use tquant_formats::{BlockQuantizer, BlockSize, ScaleDtype};
//! let spec = Spec {
//!     rows: 4096,
//!     cols: 4096,
//!     n: 1,
//!     format: "nf4".parse().unwrap(),
//!     quantizer: BlockQuantizer { block: BlockSize::Elements(32), scale_dtype: ScaleDtype::F16 },
//!     reps: 15,
//!     threads: 1,
//!     read_mib: 1024,
//! };
//! print!("{}", kernel::run(&spec)?.table(&spec));
//! # Ok::<(), tquant_bench::kernel::BenchError>(())
//! ```

#![warn(missing_docs)]

pub mod kernel;
mod output;
pub mod roofline;

pub use kernel::Results;
