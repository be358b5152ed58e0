//! tquant-kernels.
