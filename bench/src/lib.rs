//! Benchmarks live in benches/; `kernel` is the kernel benchmark `tquant bench` runs.

pub mod kernel;
pub mod roofline;
