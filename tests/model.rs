//! The forward pass: DeepSeek-V2/V3 against reference logits, quantized checkpoints against their
//! dequantized weights, evaluation.
//!
//! One test binary for the files below (each stays a module under its own name), so the
//! suite links a few binaries rather than one per file.

mod support;

mod auto_model;
mod model_bf16;
mod model_bf16_memory;
mod model_eval;
mod model_f16;
mod model_quantized;
mod model_reference;
mod model_synthetic;
mod model_v3;
