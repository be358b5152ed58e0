//! An output slice that parallel tasks write at disjoint indices (rows of `y` split over
//! tasks): a leaf below `dispatch` and `panel`.

/// The output, written by parallel tasks at disjoint indices (see `dispatch::run_rows`).
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: tasks only write through the pointer at indices no other task writes, while the
// slice it came from is exclusively borrowed.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Safety: `i` is inside the output and no other thread accesses it meanwhile.
    #[inline(always)]
    pub(crate) unsafe fn write(&self, i: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe { *self.0.add(i) = v }
    }
}
