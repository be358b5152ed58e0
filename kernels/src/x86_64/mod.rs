//! x86-64 paths: AVX2 + FMA and AVX-512, compiled with `#[target_feature]` and chosen at run time.

use crate::dispatch::Acts;
use crate::{Isa, QMatrix};

/// Whether each path is built (a path is listed as available only when it is).
pub(crate) const AVX2_READY: bool = false;
pub(crate) const AVX512_READY: bool = false;

type QRows = unsafe fn(&QMatrix, &Acts, usize, usize, &mut [f32]);
type F32Rows = unsafe fn(&[f32], usize, &[f32], usize, usize, &mut [f32]);

pub(crate) fn exact_kernel(isa: Isa) -> QRows {
    unreachable!("no exact kernel for {isa} yet")
}
pub(crate) fn fast_kernel(isa: Isa) -> QRows {
    unreachable!("no fast kernel for {isa} yet")
}
pub(crate) fn f32_kernel(isa: Isa) -> F32Rows {
    unreachable!("no f32 kernel for {isa} yet")
}
