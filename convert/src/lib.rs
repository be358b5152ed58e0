//! tquant-convert: reads safetensors checkpoints (one file or shards, memory-mapped, every header
//! validated before any data is touched), quantizes them tensor by tensor into self-describing
//! quantized checkpoints written atomically and streamed, and reads those back.
//!
//! - [`Checkpoint`]: one reader for original and quantized checkpoints; [`Weight`] is either a
//!   dense [`TensorView`] or a [`QuantizedView`] whose [`QuantizedView::matrix`] is ready for the
//!   kernels.
//! - [`Recipe`]: one string per way of quantizing (`nf4`, `sf4` at nu = 5, `sf4_fit`,
//!   `auto+search`, `gptq:nf4`), which makes [`ConvertOptions`]; [`ConvertOptions::builder`]
//!   sets them one by one.
//! - [`quantize_tensor`]: the in-memory quantization of one tensor (fit, codebook, blocks).
//! - [`convert()`]: the streaming converter behind `tquant convert`.
//!
//! ```
//! use tquant_convert::{quantize_tensor, Dtype, Recipe};
//! use tquant_formats::{BlockSize, ScaleDtype};
//!
//! let recipe: Recipe = "sf4_fit".parse()?;
//! let opts = recipe.options(BlockSize::Elements(64), ScaleDtype::F16)?;
//! let w: Vec<f32> = (0..16 * 128).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0).collect();
//! let t = quantize_tensor("layers.0.w", &w, &[16, 128], Dtype::F32, &opts)?;
//! // nu fitted to these weights, recorded in the format name with its table.
//! assert!(t.info.matrices[0].format.starts_with("sf4:nu="));
//! let back = t.dequantize();
//! let err: f32 = w.iter().zip(&back).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / w.len() as f32;
//! assert!(err < 0.01, "{err}");
//! # Ok::<(), tquant_convert::ConvertError>(())
//! ```
//!
//! Modules come in layers, each using only those below it:
//! - data and options: [`schema`] (what files record), [`dtype`], [`header`], [`policy`],
//!   [`options`] ([`ConvertOptions`], `auto`'s candidate lists), [`recipe`], [`quality`] (the
//!   `fast` / `balanced` / `best` presets over recipes), and the error type;
//! - strategies: [`layouts`], [`compressed_tensors`], [`auto`], [`calibration`] (GPTQ with the statistics) and
//!   [`quantize`] (a tensor);
//! - files and orchestration: [`fp8`], [`detect`], [`checkpoint`], [`quantized`] (views),
//!   [`inspect`], the plan, the writer and [`convert()`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod auto;
pub mod calibration;
pub mod checkpoint;
pub mod compressed_tensors;
pub mod convert;
pub mod detect;
pub mod dtype;
mod error;
mod fitting;
pub mod fp8;
pub mod gguf;
pub mod header;
pub mod inspect;
pub mod layouts;
mod matrix;
mod mmap;
pub mod options;
mod plan;
pub mod policy;
pub mod quality;
pub mod quantize;
pub mod quantized;
pub mod recipe;
pub mod schema;
mod shards;
mod statistics;
pub mod stats;
mod summary;
mod tables;
mod writer;

pub use auto::AutoSpec;
pub use checkpoint::{Checkpoint, TensorView, Weight};
pub use convert::{convert, ConvertSummary, NoProgress, Progress, RunOptions};
pub use error::{AutoListError, ConvertError, Setting, WithFlags};
pub use options::{ConvertOptionsBuilder, FormatChoice};
pub use policy::{Action, KeepAs, Policy};
pub use quality::Quality;
pub use quantize::{quantize_tensor, ConvertOptions, NuChoice};
pub use quantized::{Layout, MatrixRef, QuantInfo, QuantizedTensor, QuantizedView};
pub use recipe::{Overrides, Recipe, RecipeFormat};
pub use safetensors::Dtype;
pub use writer::{check_output, sync_dir, MANIFEST_FILE};
