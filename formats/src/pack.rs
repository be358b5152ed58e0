//! tquant's nibble layout.
//!
//! A quantized matrix `[rows, cols]` stores each row in `ceil(cols / 2)` bytes: element `2j` of
//! the row in the **low** nibble of byte `j`, element `2j + 1` in the high nibble (the order OCP
//! MXFP4 and Hugging Face use). Rows start on a byte boundary; an odd row's last high nibble is 0.
//! Formats of fewer than 4 bits use the same nibbles (their codes are below `2^bits`).

/// Bytes one row of `cols` codes takes.
#[inline]
pub fn row_bytes(cols: usize) -> usize {
    cols.div_ceil(2)
}

/// Packs one row of codes (each < 16) into `out` (`row_bytes(codes.len())` bytes).
pub fn pack_row(codes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), row_bytes(codes.len()));
    for (o, pair) in out.iter_mut().zip(codes.chunks(2)) {
        let hi = pair.get(1).copied().unwrap_or(0);
        *o = (pair[0] & 0x0f) | (hi << 4);
    }
}

/// Unpacks `out.len()` codes of one row.
pub fn unpack_row(packed: &[u8], out: &mut [u8]) {
    debug_assert!(packed.len() >= row_bytes(out.len()));
    for (i, o) in out.iter_mut().enumerate() {
        let b = packed[i / 2];
        *o = if i % 2 == 0 { b & 0x0f } else { b >> 4 };
    }
}

/// Code of element `i` of a packed row.
#[inline]
pub fn code_at(packed_row: &[u8], i: usize) -> u8 {
    let b = packed_row[i / 2];
    if i % 2 == 0 {
        b & 0x0f
    } else {
        b >> 4
    }
}
