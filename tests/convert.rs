//! The converter: reading safetensors (bf16, f32, FP8, bitsandbytes, MXFP4), writing quantized
//! checkpoints, reading them back, and its errors.
//!
//! One test binary for the files below (each stays a module under its own name), so the
//! suite links a few binaries rather than one per file.

mod convert_support;
mod support;

mod convert_bnb;
mod convert_compressed_tensors;
mod convert_ct_int4;
mod convert_errors;
mod convert_fp8;
mod convert_fp8_large;
mod convert_large;
mod convert_learned;
mod convert_minilm;
mod convert_moe;
mod convert_mxfp4;
mod convert_numpy;
mod convert_q8;
mod convert_quality;
mod convert_recipes;
mod convert_tiny_lite;
