//! Calibration: capturing activations, GPTQ, the staged and layer-wise runs, the targets measured
//! through `tquant report`.
//!
//! One test binary for the files below (each stays a module under its own name), so the
//! suite links a few binaries rather than one per file.

mod support;

mod calibrate_capture;
mod calibrate_cli;
mod calibrate_convert;
mod calibrate_gptq;
mod calibrate_large;
mod calibrate_layerwise;
mod calibrate_report;
mod calibrate_self;
mod calibrate_stages;
mod calibrate_target;
