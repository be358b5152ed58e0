//! Arbitrary bytes as a quantized checkpoint: open, view every tensor, dequantize, hand every
//! matrix to the kernels.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tquant_fuzz::quantized_reader(data);
});
