//! tquant-convert.
