//! tquant-formats: 4-bit (and 3-bit) weight formats as data.
//!
//! Every format is a [`Codebook`] (its values in code order) plus the block-scaling rule of
//! [`BlockQuantizer`]. [`Format`] is the catalog of named formats of Dotzel et al. (ICML 2024) and
//! their peers; [`pack`] defines tquant's nibble order. Pure: no I/O, no `unsafe`.
//!
//! ```
//! use tquant_formats::{BlockQuantizer, BlockSize, Format, ScaleDtype};
//! let nf4: Format = "nf4".parse()?;
//! let quantizer = BlockQuantizer {
//!     block: BlockSize::Elements(64),
//!     scale_dtype: ScaleDtype::F16,
//! };
//! let (rows, cols) = (2, 128);
//! let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = quantizer.quantize(nf4.codebook(), &w, rows, cols)?;
//! assert_eq!(q.codes.len(), rows * cols / 2); // two 4-bit codes a byte
//! assert_eq!(q.scales.len(), rows * 2 * 2); // two blocks a row, 2-byte scales
//! let back = q.dequantize(nf4.codebook());
//! // Each value is off by at most half NF4's widest gap (0.304, from -1 to -0.696) times its
//! // block's scale (at most 1 here).
//! let err: f32 = w.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
//! assert!(err <= 0.16, "{err}");
//! # Ok::<(), tquant_formats::FormatError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod area;
pub mod block;
#[cfg(test)]
mod block_fp4_tests;
pub mod catalog;
mod codebook;
pub mod encode;
pub mod fit;
pub mod generate;
pub mod gptq;
pub mod layouts;
mod listing;
pub mod lloyd;
pub mod nu_search;
pub mod nvfp4;
pub mod pack;
pub mod q8_0;
pub mod sample;
mod scale;
pub mod screen;
mod search;
pub mod select;

pub use block::{BlockQuantizer, BlockSize, QuantizedMatrix, ScaleRule};
pub use catalog::Format;
pub use codebook::Codebook;
pub use encode::{BlockEncode, EncodeTable, PortableEncode};
pub use fit::{
    fit_block_standardized, fit_block_standardized_with, fit_student_t, fit_student_t_with,
    FitSampling, TFit,
};
pub use listing::{catalog_json, catalog_table};
pub use nu_search::{search_nu_min_error, search_nu_min_error_with_screen, NuSearch};
pub use scale::{e4m3_to_f32, f32_to_e4m3, ScaleDtype};
pub use screen::{Screen, ScreenJob, ScreenTable};

/// Errors of the format layer: a bad codebook, a name or number that does not parse, lengths
/// that do not match a shape, or a value an operation cannot represent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A codebook whose number of values is not 2, 4, 8 or 16.
    #[error("invalid codebook: a codebook needs 2, 4, 8 or 16 values (1 to 4 bits), got {len}")]
    CodebookSize {
        /// The number of values given.
        len: usize,
    },
    /// A codebook value that is NaN or infinite.
    #[error("invalid codebook: codebook values must be finite, got {value}")]
    CodebookValue {
        /// The first such value.
        value: f32,
    },
    /// A codebook of zeros only.
    #[error("invalid codebook: a codebook needs at least one non-zero value")]
    CodebookZero,
    /// A table that needs signed block scales, asked for with unsigned E8M0 scales.
    #[error(
        "invalid codebook: this table's largest magnitude ({extreme}) has no counterpart of the \
         other sign, so its blocks need signed scales, which e8m0 cannot store; use f32, f16 or \
         bf16 scales"
    )]
    SignedScale {
        /// The table's value of largest magnitude.
        extreme: f32,
    },
    /// A block size outside the supported range.
    #[error(
        "block size {size} is not supported: use {}..={} or 'row'",
        block::MIN_BLOCK,
        block::MAX_BLOCK
    )]
    BlockSize {
        /// The size asked for.
        size: usize,
    },
    /// A block size that is neither a number nor `row`.
    #[error("block size '{text}' is not a number or 'row'")]
    BlockSizeText {
        /// The text given.
        text: String,
    },
    /// A scale rule name that is not `absmax`, `search`, `rceil` or `4over6`.
    #[error("unknown scale rule '{name}' (absmax, search, rceil, 4over6)")]
    UnknownScaleRule {
        /// The name given.
        name: String,
    },
    /// A scale dtype name that is not `f32`, `f16`, `bf16` or `e8m0`.
    #[error("unknown scale dtype '{name}' (f32, f16, bf16, e8m0)")]
    UnknownScaleDtype {
        /// The name given.
        name: String,
    },
    /// A format name that is not in the catalog.
    #[error(
        "unknown format '{name}'; known: {}, {}, sf4:nu=X, sf3:nu=X, sf4_opt:nu=X, custom:v0,v1,...",
        catalog::NAMES.join(", "),
        catalog::DERIVED_NAMES.join(", ")
    )]
    UnknownFormat {
        /// The name given.
        name: String,
    },
    /// A parameter given to a format that takes none.
    #[error("format '{base}' takes no parameter ('{text}')")]
    UnexpectedParameter {
        /// The format's name.
        base: String,
        /// The whole text given.
        text: String,
    },
    /// A Student Float parameter not written `nu=X`.
    #[error("'{text}': write the parameter as {base}:nu=X")]
    ParameterSyntax {
        /// The format's name (`sf4`, `sf3`).
        base: String,
        /// The whole text given.
        text: String,
    },
    /// A Student Float `nu` that is not a number.
    #[error("'{text}': nu '{value}' is not a number")]
    NuText {
        /// The whole text given.
        text: String,
        /// The value of `nu=`.
        value: String,
    },
    /// A Student Float `nu` that is not positive.
    #[error("nu must be > 0, got {nu}")]
    Nu {
        /// The value given.
        nu: f64,
    },
    /// Student Float of a bit width other than 3 or 4.
    #[error("Student Float has 3 or 4 bits, not {bits}")]
    StudentFloatBits {
        /// The bit width asked for.
        bits: u32,
    },
    /// A custom codebook value that is not a number.
    #[error("custom codebook value '{value}' is not a number")]
    CustomValue {
        /// The value's text.
        value: String,
    },
    /// A bitsandbytes block size bitsandbytes does not have.
    #[error(
        "bitsandbytes block size {blocksize} is not one of {:?}",
        layouts::BNB_BLOCKS
    )]
    BnbBlockSize {
        /// The block size asked for.
        blocksize: usize,
    },
    /// A value count that is not `rows * cols`.
    #[error("shape: {len} values do not make a [{rows}, {cols}] matrix")]
    MatrixLength {
        /// Values given.
        len: usize,
        /// Rows of the shape.
        rows: usize,
        /// Columns of the shape.
        cols: usize,
    },
    /// A bitsandbytes tensor whose element count is not `rows * cols`.
    #[error("shape: {numel} elements do not make a [{rows}, {cols}] matrix")]
    BnbMatrix {
        /// The tensor's elements.
        numel: usize,
        /// Rows of the shape.
        rows: usize,
        /// Columns of the shape.
        cols: usize,
    },
    /// bitsandbytes NF4 data whose lengths do not match its element count.
    #[error(
        "shape: bitsandbytes NF4 of {numel} elements in blocks of {blocksize} needs {bytes} bytes \
         and {blocks} absmax values, got {got_bytes} and {got_blocks}"
    )]
    BnbLength {
        /// The tensor's elements.
        numel: usize,
        /// Its block size.
        blocksize: usize,
        /// Packed bytes needed.
        bytes: usize,
        /// absmax values needed.
        blocks: usize,
        /// Packed bytes given.
        got_bytes: usize,
        /// absmax values given.
        got_blocks: usize,
    },
    /// bitsandbytes blocks that run across rows, which tquant's per-row blocks cannot hold.
    #[error(
        "shape: bitsandbytes blocks of {blocksize} cross the rows of length {cols}; tquant blocks \
         cannot"
    )]
    BnbRowCross {
        /// The block size.
        blocksize: usize,
        /// The row length.
        cols: usize,
    },
    /// An MXFP4 row that is not a whole number of groups.
    #[error(
        "shape: MXFP4 rows hold groups of {}; a row of {cols} elements is not a whole number of \
         groups",
        layouts::MXFP4_BLOCK
    )]
    Mxfp4Row {
        /// The row length.
        cols: usize,
    },
    /// MXFP4 data whose lengths do not match its shape.
    #[error(
        "shape: MXFP4 [{rows}, {cols}] needs {blocks} block bytes and {scales} scales, got \
         {got_blocks} and {got_scales}"
    )]
    Mxfp4Length {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Block bytes needed.
        blocks: usize,
        /// Scales needed.
        scales: usize,
        /// Block bytes given.
        got_blocks: usize,
        /// Scales given.
        got_scales: usize,
    },
    /// A quantized matrix whose blocks or scales are not MXFP4's.
    #[error(
        "shape: MXFP4 needs blocks of {} with e8m0 scales, not blocks of {block} with {scale_dtype}",
        layouts::MXFP4_BLOCK
    )]
    Mxfp4Layout {
        /// The matrix's block length.
        block: usize,
        /// The matrix's scale dtype.
        scale_dtype: ScaleDtype,
    },
    /// An input second moment whose length is not `dim * dim`.
    #[error("shape: a {dim} x {dim} input second moment needs {want} values, got {len}")]
    MomentLength {
        /// Its dimension.
        dim: usize,
        /// `dim * dim`.
        want: usize,
        /// Values given.
        len: usize,
    },
    /// A matrix whose width is not its input second moment's dimension.
    #[error("shape: a matrix of {cols} columns, but the input second moment is {dim} x {dim}")]
    MomentColumns {
        /// The matrix's columns.
        cols: usize,
        /// The second moment's dimension.
        dim: usize,
    },
    /// An element a layout cannot store (NaN or infinite).
    #[error("value: {what}: element {index} is {value}, which the layout cannot store")]
    NotFinite {
        /// What the elements are.
        what: &'static str,
        /// The first such element's index.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// An MXFP4 scale byte of 0xff (E8M0's NaN).
    #[error("value: MXFP4 scale of group {group} is 0xff, E8M0's NaN")]
    Mxfp4NanScale {
        /// The group's index.
        group: usize,
    },
    /// A row length that is not a whole number of NVFP4 blocks.
    #[error(
        "shape: NVFP4 rows hold blocks of {}; a row of {cols} elements is not a whole number of \
         blocks",
        nvfp4::NVFP4_BLOCK
    )]
    Nvfp4Row {
        /// The row length.
        cols: usize,
    },
    /// NVFP4 data whose lengths do not match its shape.
    #[error(
        "shape: NVFP4 [{rows}, {cols}] needs {} packed bytes and {} scales, got {got_packed} and \
         {got_scales}",
        rows * cols / 2,
        rows * cols / nvfp4::NVFP4_BLOCK
    )]
    Nvfp4Length {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Packed bytes given.
        got_packed: usize,
        /// Scales given.
        got_scales: usize,
    },
    /// An NVFP4 block scale that is E4M3's NaN (0x7f or 0xff).
    #[error("value: NVFP4 scale of block {block} is E4M3's NaN")]
    Nvfp4NanScale {
        /// The block's index.
        block: usize,
    },
    /// An NVFP4 tensor scale that is zero, negative or not finite.
    #[error("value: NVFP4 tensor scale {value} is not a finite positive number")]
    Nvfp4GlobalScale {
        /// The value.
        value: f32,
    },
    /// A column weight that is negative or not finite.
    #[error("value: column weight {column} is {weight}: weights must be finite and >= 0")]
    ColumnWeight {
        /// The column.
        column: usize,
        /// Its weight.
        weight: f64,
    },
    /// An input second moment with a NaN or infinite entry.
    #[error("value: the input second moment holds a non-finite value ({value})")]
    MomentValue {
        /// The first such entry.
        value: f64,
    },
    /// A GPTQ damping that is negative or not finite.
    #[error("value: damping must be a finite number >= 0, got {damp}")]
    Damping {
        /// The damping given.
        damp: f64,
    },
    /// Every candidate format's selection error was NaN.
    #[error(
        "value: the selection error is NaN for every auto candidate (does the error fit this \
         matrix?)"
    )]
    SelectionNan,
    /// Every candidate format's output error on a tensor was NaN.
    #[error("value: the output error is NaN for every auto candidate of '{tensor}'")]
    OutputNan {
        /// The tensor's name.
        tensor: String,
    },
}
