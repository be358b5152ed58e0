//! Hostile input: malformed safetensors, headers, options and outputs get clear errors, never
//! panics.
//!
//! One test binary for the files below (each stays a module under its own name), so the
//! suite links a few binaries rather than one per file.

mod hostile_support;

mod hostile_corpus;
mod hostile_fp8;
mod hostile_options;
mod hostile_output;
mod hostile_quantized;
mod hostile_safetensors;
mod hostile_weights;
mod module_cycles;
