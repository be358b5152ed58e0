//! tquant: 4-bit weight formats for LLMs on the CPU. A thin facade over the workspace crates:
//! `tquant::formats::Format`, `tquant::convert::convert`, `tquant::model::Generation`, ...

#![warn(missing_docs)]

pub use tquant_bench as bench;
pub use tquant_convert as convert;
pub use tquant_formats as formats;
pub use tquant_kernels as kernels;
pub use tquant_model as model;
pub use tquant_report as report;
pub use tquant_text as text;
