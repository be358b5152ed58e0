//! tquant-model.
