//! Arbitrary bytes as `model.safetensors`: open, validate, read every tensor.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tquant_fuzz::safetensors_reader(data);
});
