//! tquant-convert: reads safetensors checkpoints (one file or shards, memory-mapped, every header
//! validated before any data is touched), quantizes them tensor by tensor into self-describing
//! quantized checkpoints written atomically and streamed, and reads those back.
//!
//! - [`Checkpoint`]: one reader for original and quantized checkpoints; [`Weight`] is either a
//!   dense [`TensorView`] or a [`QuantizedView`] whose [`QuantizedView::matrix`] is ready for the
//!   kernels.
//! - [`quantize_tensor`]: the in-memory quantization of one tensor (fit, codebook, blocks).
//! - [`convert()`]: the streaming converter behind `tquant convert`.
#![deny(unsafe_code)]

pub mod auto;
pub mod calibration;
pub mod checkpoint;
pub mod convert;
pub mod detect;
pub mod dtype;
mod error;
pub mod fp8;
pub mod header;
pub mod inspect;
pub mod layouts;
mod mmap;
mod plan;
pub mod policy;
pub mod quantize;
pub mod quantized;
pub mod recipe;
pub mod stats;
mod summary;
mod tables;
mod writer;

pub use auto::AutoSpec;
pub use checkpoint::{Checkpoint, TensorView, Weight};
pub use convert::{convert, ConvertSummary, NoProgress, Progress, RunOptions};
pub use error::ConvertError;
pub use policy::{Action, Policy};
pub use quantize::{quantize_tensor, ConvertOptions, NuChoice};
pub use quantized::{Layout, MatrixRef, QuantInfo, QuantizedTensor, QuantizedView};
pub use recipe::{Recipe, RecipeFormat};
pub use safetensors::Dtype;
pub use writer::{check_output, sync_dir, MANIFEST_FILE};
