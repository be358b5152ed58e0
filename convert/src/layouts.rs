//! Glue to the compatible layouts of `tquant_formats` (bitsandbytes NF4, Hugging Face MXFP4):
//! what each layout accepts, and the calls that pack a matrix in it.

use crate::detect::MXFP4_BLOCK;
use crate::quantize::ConvertOptions;
use crate::quantized::Layout;
use tquant_formats::FormatError;

/// Block sizes bitsandbytes' `quantize_4bit` accepts.
pub const BNB_BLOCKS: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Whether a `[rows, cols]` matrix can be stored in the options' layout.
pub fn check_matrix(opts: &ConvertOptions, _rows: usize, cols: usize) -> Result<(), String> {
    if opts.layout == Layout::Mxfp4 && cols % MXFP4_BLOCK != 0 {
        return Err(format!(
            "MXFP4 needs rows whose length is a multiple of {MXFP4_BLOCK}; this one has {cols} (exclude it with --exclude)"
        ));
    }
    Ok(())
}

/// bitsandbytes NF4 of a flattened tensor: (packed codes, f32 absmax bytes).
pub fn bnb_quantize(_values: &[f32], _block: usize) -> Result<(Vec<u8>, Vec<u8>), FormatError> {
    Err(FormatError::Parse(
        "the bitsandbytes layout is not available in this build yet".into(),
    ))
}

/// bitsandbytes' packed quant state: the UTF-8 bytes of Python's `json.dumps` of
/// `{quant_type, blocksize, dtype, shape}` (`QuantState.as_dict(packed=True)`).
pub fn bnb_quant_state(info: &crate::quantized::QuantInfo) -> Vec<u8> {
    let dtype: safetensors::Dtype =
        serde_json::from_value(serde_json::Value::String(info.dtype.clone()))
            .unwrap_or(safetensors::Dtype::F32);
    let shape = info
        .shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{{\"quant_type\": \"nf4\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{shape}]}}",
        info.block,
        crate::dtype::torch_name(dtype).unwrap_or("float32"),
    )
    .into_bytes()
}

/// transformers' `quantization_config` of a bitsandbytes NF4 checkpoint.
pub fn bnb_config(skip_modules: &[String]) -> serde_json::Value {
    serde_json::json!({
        "quant_method": "bitsandbytes",
        "load_in_4bit": true,
        "load_in_8bit": false,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": false,
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": skip_modules,
    })
}
