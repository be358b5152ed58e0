//! The C ABI (see include/tquant.h).
