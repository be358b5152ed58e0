//! Glue to the compatible layouts of `tquant_formats` (bitsandbytes NF4, Hugging Face MXFP4):
//! what each layout accepts, and the calls that pack a matrix in it.

use crate::error::ConvertError;
use crate::options::ConvertOptions;
use crate::schema::Layout;
use std::path::Path;
use tquant_formats::layouts::{bnb_nf4_quantize, mxfp4_quantize, MxScaleRule};
pub use tquant_formats::layouts::{BNB_BLOCKS, MXFP4_BLOCK};
use tquant_formats::FormatError;

/// Whether the `[rows, cols]` matrices of tensor `tensor` (in the file `path`) can be stored in
/// the options' layout.
pub(crate) fn check_matrix(
    opts: &ConvertOptions,
    (path, tensor): (Option<&Path>, &str),
    cols: usize,
) -> Result<(), ConvertError> {
    if opts.layout == Layout::Mxfp4 && cols % MXFP4_BLOCK != 0 {
        return Err(ConvertError::Mxfp4Rows {
            path: path.map(Path::to_path_buf),
            tensor: tensor.to_string(),
            cols,
        });
    }
    Ok(())
}

/// bitsandbytes NF4 of a flattened tensor: (packed codes, little-endian f32 absmax).
pub(crate) fn bnb_quantize(
    values: &[f32],
    block: usize,
) -> Result<(Vec<u8>, Vec<u8>), FormatError> {
    let q = bnb_nf4_quantize(values, block)?;
    let absmax = q.absmax.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((q.packed, absmax))
}

/// OCP MXFP4 of a `[rows, cols]` matrix (scale `floor(log2(amax)) - 2`): (`_blocks` bytes,
/// `_scales` E8M0 bytes).
pub(crate) fn mxfp4(
    values: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(Vec<u8>, Vec<u8>), FormatError> {
    let q = mxfp4_quantize(values, rows, cols, MxScaleRule::Floor)?;
    Ok((q.blocks, q.scales))
}

/// bitsandbytes' packed quant state: the UTF-8 bytes of Python's `json.dumps` of
/// `{quant_type, blocksize, dtype, shape}` (`QuantState.as_dict(packed=True)`).
pub(crate) fn bnb_quant_state(info: &crate::schema::QuantInfo) -> Vec<u8> {
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

/// transformers' `quantization_config` of a bitsandbytes NF4 checkpoint, as transformers 5.24
/// writes it (`BitsAndBytesConfig.to_dict()`, tests/data/convert/bnb_nf4/config.json).
pub(crate) fn bnb_config() -> serde_json::Value {
    serde_json::json!({
        "_load_in_4bit": true,
        "_load_in_8bit": false,
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": false,
        "llm_int8_enable_fp32_cpu_offload": false,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_skip_modules": null,
        "llm_int8_threshold": 6.0,
        "load_in_4bit": true,
        "load_in_8bit": false,
        "quant_method": "bitsandbytes"
    })
}
