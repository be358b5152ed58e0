//! tquant-formats: 4-bit (and 3-bit) weight formats as data.
//!
//! Every format is a [`Codebook`] (its values in code order) plus the block-scaling rule of
//! [`BlockQuantizer`]. [`Format`] is the catalog of named formats of Dotzel et al. (ICML 2024) and
//! their peers; [`pack`] defines tquant's nibble order. Pure: no I/O, no `unsafe`.
#![forbid(unsafe_code)]

pub mod area;
pub mod block;
pub mod catalog;
pub mod codebook;
pub mod fit;
pub mod generate;
pub mod gptq;
pub mod layouts;
mod listing;
pub mod nu_search;
pub mod pack;
pub mod sample;
pub mod scale;
mod search;
pub mod select;

pub use block::{BlockQuantizer, BlockSize, QuantizedMatrix, ScaleRule};
pub use catalog::Format;
pub use codebook::Codebook;
pub use fit::{
    fit_block_standardized, fit_block_standardized_with, fit_student_t, fit_student_t_with,
    FitSampling, TFit,
};
pub use listing::catalog_table;
pub use nu_search::{search_nu_min_error, NuSearch};
pub use scale::ScaleDtype;

/// Errors of the format layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    #[error("invalid codebook: {0}")]
    Codebook(String),
    #[error("{0}")]
    Parse(String),
    #[error("shape: {0}")]
    Shape(String),
    /// A value the operation cannot represent (a NaN or infinity where a layout has none).
    #[error("value: {0}")]
    Value(String),
}
