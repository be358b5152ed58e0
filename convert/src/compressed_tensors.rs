//! The compressed-tensors layout (what llm-compressor writes and vLLM loads), as
//! compressed-tensors 0.20 stores it: which settings make which of its formats, the calls that
//! quantize a matrix bit for bit as it does, and the `quantization_config` of config.json.
//!
//! * `nvfp4-pack-quantized` (e2m1, blocks of 16, e4m3 scales): `<m>.weight_packed` U8
//!   `[rows, cols/2]`, `<m>.weight_scale` F8_E4M3 `[rows, cols/16]`, `<m>.weight_global_scale`
//!   F32 `[1]`, a divisor ([`tquant_formats::nvfp4`]).
//! * `mxfp4-pack-quantized` (e2m1, blocks of 32, e8m0 scales): `weight_packed` as above and
//!   `weight_scale` U8 `[rows, cols/32]` (E8M0, compressed-tensors' power-of-two rule).
//!
//! Packed bytes are tquant's code layout (element `2k` in the low nibble of byte `k`).

use crate::error::ConvertError;
use crate::options::ConvertOptions;
pub use crate::schema::CtFormat;
use serde_json::{json, Value};
use std::path::Path;
use tquant_formats::layouts::{mxfp4_quantize, MxScaleRule};
use tquant_formats::nvfp4::{
    modelopt_scale_2, nvfp4_global_scale, nvfp4_quantize, nvfp4_quantize_modelopt, NVFP4_BLOCK,
};
use tquant_formats::FormatError;

/// Suffix, appended to a weight's name, of its packed codes (`X.weight` -> `X.weight_packed`).
pub const PACKED_SUFFIX: &str = "_packed";
/// Suffix of its block scales.
pub const SCALE_SUFFIX: &str = "_scale";
/// Suffix of NVFP4's tensor scale.
pub const GLOBAL_SCALE_SUFFIX: &str = "_global_scale";
/// The compressed-tensors version whose files these are byte for byte (config.json `version`).
pub const CT_VERSION: &str = "0.20.0";

/// The chosen elements per block (INT4's group).
fn group_of(opts: &ConvertOptions) -> usize {
    match opts.block {
        tquant_formats::BlockSize::Elements(n) => n,
        _ => NVFP4_BLOCK,
    }
}

fn format_of(opts: &ConvertOptions) -> Option<CtFormat> {
    CtFormat::of(opts.format.name(), opts.block, opts.scale_dtype)
}

/// A tensor of `shape` (in `path`) must be a matrix whose rows are whole blocks.
pub(crate) fn check_tensor(
    opts: &ConvertOptions,
    (path, tensor): (Option<&Path>, &str),
    shape: &[usize],
) -> Result<(), ConvertError> {
    let block = match format_of(opts) {
        Some(f) => f.block().unwrap_or_else(|| group_of(opts)),
        None => NVFP4_BLOCK,
    };
    if shape.len() != 2 || shape[1] % block != 0 {
        return Err(ConvertError::CtTensor {
            path: path.map(Path::to_path_buf),
            tensor: tensor.to_string(),
            shape: shape.to_vec(),
            block,
        });
    }
    Ok(())
}

/// A matrix's packed codes, scale bytes and NVFP4 tensor scale.
pub(crate) type Packed = (Vec<u8>, Vec<u8>, Option<f32>);

/// One `[rows, cols]` matrix as compressed-tensors compresses it after a min-max observer:
/// (packed codes, scale bytes, NVFP4's tensor scale).
pub(crate) fn quantize(
    values: &[f32],
    rows: usize,
    cols: usize,
    opts: &ConvertOptions,
) -> Result<Packed, FormatError> {
    match format_of(opts) {
        Some(CtFormat::Mxfp4) => {
            let q = mxfp4_quantize(values, rows, cols, MxScaleRule::CompressedTensors)?;
            Ok((q.blocks, q.scales, None))
        }
        Some(CtFormat::Int4) => {
            let (codes, scales) =
                int4_quantize(values, rows, cols, group_of(opts), opts.scale_dtype);
            Ok((codes, scales, None))
        }
        _ => {
            let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let m = quantize_nvfp4_with(values, rows, cols, amax, opts.layout)?;
            Ok((m.codes, m.scales, m.info.global_scale))
        }
    }
}

/// The value of INT4 code `c`: compressed-tensors adds `2^(bits-1)` before packing.
pub fn int4_offset_codebook() -> Vec<f32> {
    (0..16).map(|c| c as f32 - 8.0).collect()
}

/// `pack-quantized` INT4 as compressed-tensors 0.20 computes it on f32 weights: per group
/// `scale = amax / 7.5` (`calculate_qparams`: `bit_range / 2`; 0 becomes f32's epsilon), then
/// stored in `scale_dtype`; `q = round(clamp(x / scale, -8, 7))` with ties to even, code
/// `q + 8` (tquant's nibble order is `pack_to_int32`'s). Codes and scale bytes.
fn int4_quantize(
    values: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    scale_dtype: tquant_formats::ScaleDtype,
) -> (Vec<u8>, Vec<u8>) {
    let mut codes = vec![0u8; rows * cols / 2];
    let mut scales = Vec::with_capacity(rows * (cols / group) * scale_dtype.size());
    for r in 0..rows {
        for g in 0..cols / group {
            let start = r * cols + g * group;
            let block = &values[start..start + group];
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = amax / 7.5;
            let s = scale_dtype.round(if s == 0.0 { f32::EPSILON } else { s });
            scale_dtype.push_bytes(s, &mut scales);
            for (i, x) in block.iter().enumerate() {
                let q = (x / s).clamp(-8.0, 7.0).round_ties_even();
                let code = (q as i32 + 8) as u8;
                let at = start + i;
                codes[at / 2] |= if at % 2 == 0 { code } else { code << 4 };
            }
        }
    }
    (codes, scales)
}

/// Members of the layers vLLM fuses into one (q/k/v; DeepSeek's MLA `q_a_proj` with
/// `kv_a_proj_with_mqa`; gate/up), each with the key its group shares.
const FUSED: [(&str, &str); 7] = [
    (".q_proj.weight", ".qkv"),
    (".k_proj.weight", ".qkv"),
    (".v_proj.weight", ".qkv"),
    (".q_a_proj.weight", ".qkv_a"),
    (".kv_a_proj_with_mqa.weight", ".qkv_a"),
    (".gate_proj.weight", ".gate_up"),
    (".up_proj.weight", ".gate_up"),
];

/// The fused layer a weight is part of (`...self_attn.qkv`), if any.
pub fn fused_group(name: &str) -> Option<String> {
    FUSED
        .iter()
        .find_map(|(suffix, key)| name.strip_suffix(suffix).map(|m| format!("{m}{key}")))
}

/// The largest magnitude fused layers share, from each weight's: vLLM multiplies a fused layer
/// with one tensor scale, so the weights of a group (two or more of them quantized) take the
/// group's largest amax, i.e. compressed-tensors' smallest `weight_global_scale`
/// (llm-compressor's `update_fused_layer_weight_global_scales`) and ModelOpt's largest
/// `weight_scale_2`. Weights outside a group are not in the map.
pub fn shared_amax(amax: &[(String, f32)]) -> std::collections::BTreeMap<String, f32> {
    let mut groups: std::collections::BTreeMap<String, Vec<(&str, f32)>> = Default::default();
    for (name, a) in amax {
        if let Some(g) = fused_group(name) {
            groups.entry(g).or_default().push((name, a.abs()));
        }
    }
    groups
        .into_values()
        .filter(|members| members.len() > 1)
        .flat_map(|members| {
            let a = members.iter().map(|m| m.1).fold(0.0f32, f32::max);
            members.into_iter().map(move |(n, _)| (n.to_string(), a))
        })
        .collect()
}

/// One matrix in NVFP4 whose tensor scale comes from `amax` (a fused group's), in the layout's
/// arithmetic (compressed-tensors' divisor or ModelOpt's multiplier).
pub(crate) fn quantize_nvfp4_with(
    values: &[f32],
    rows: usize,
    cols: usize,
    amax: f32,
    layout: crate::schema::Layout,
) -> Result<crate::schema::QuantizedMatrixOut, FormatError> {
    let q = match layout {
        crate::schema::Layout::ModelOpt => {
            nvfp4_quantize_modelopt(values, rows, cols, modelopt_scale_2(amax))?
        }
        _ => nvfp4_quantize(values, rows, cols, nvfp4_global_scale(amax))?,
    };
    let global_scale = q.global_scale;
    Ok(crate::schema::QuantizedMatrixOut {
        info: crate::schema::MatrixInfo {
            format: "e2m1".into(),
            nu: None,
            fit: None,
            fit_tensor: None,
            row_tables: Vec::new(),
            codebook: match layout {
                crate::schema::Layout::ModelOpt => tquant_formats::nvfp4::modelopt_e2m1().to_vec(),
                _ => tquant_formats::layouts::mxfp4_codebook().values().to_vec(),
            },
            global_scale: Some(global_scale),
        },
        codes: q.packed,
        scales: q.scales,
    })
}

/// ModelOpt's `hf_quant_config.json` for weight-only NVFP4 (`W4A16_NVFP4`, which vLLM and
/// TensorRT-LLM accept), with the modules left unquantized.
pub(crate) fn modelopt_hf_quant_config(exclude: &[String]) -> Value {
    json!({
        "producer": {"name": "tquant", "version": env!("CARGO_PKG_VERSION")},
        "quantization": {
            "quant_algo": "W4A16_NVFP4",
            "kv_cache_quant_algo": null,
            "group_size": NVFP4_BLOCK,
            "exclude_modules": exclude,
        }
    })
}

/// config.json's `quantization_config` for the ModelOpt layout: ModelOpt 0.47's
/// `convert_hf_quant_config_format` of [`modelopt_hf_quant_config`].
pub(crate) fn modelopt_quantization_config(exclude: &[String]) -> Value {
    let hf = modelopt_hf_quant_config(exclude);
    json!({
        "config_groups": {
            "group_0": {
                "weights": {"dynamic": false, "num_bits": 4, "type": "float", "group_size": NVFP4_BLOCK},
                "targets": ["Linear"],
            }
        },
        "ignore": exclude,
        "quant_algo": "W4A16_NVFP4",
        "producer": hf["producer"],
        "quant_method": "modelopt",
    })
}

/// ModelOpt's side file.
pub const HF_QUANT_CONFIG: &str = "hf_quant_config.json";

/// The `weights` arguments compressed-tensors writes for the format (`QuantizationArgs`
/// dumped without its unset fields, as `ModelCompressor.update_config` does).
fn weight_args(format: CtFormat, group: usize) -> Value {
    let (strategy, scale_dtype) = match format {
        CtFormat::Nvfp4 => ("tensor_group", "torch.float8_e4m3fn"),
        CtFormat::Mxfp4 => ("group", "torch.uint8"),
        CtFormat::Int4 => {
            return json!({
                "dynamic": false,
                "group_size": group,
                "num_bits": 4,
                "strategy": "group",
                "symmetric": true,
                "type": "int",
            })
        }
    };
    json!({
        "dynamic": false,
        "group_size": format.block().unwrap_or(group),
        "num_bits": 4,
        "scale_dtype": scale_dtype,
        "strategy": strategy,
        "symmetric": true,
        "type": "float",
    })
}

/// config.json's `quantization_config`, as compressed-tensors 0.20 writes it for a weight-only
/// scheme (`NVFP4A16`, `MXFP4A16`) over every Linear module but those in `ignore`.
pub(crate) fn quantization_config(opts: &ConvertOptions, ignore: Vec<String>) -> Value {
    let format = format_of(opts).unwrap_or(CtFormat::Nvfp4);
    json!({
        "config_groups": {
            "group_0": {
                "format": format.name(),
                "input_activations": null,
                "output_activations": null,
                "targets": ["Linear"],
                "weights": weight_args(format, group_of(opts)),
            }
        },
        "format": format.name(),
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "moe_sparsity_config": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": CT_VERSION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tquant_formats::{BlockSize, ScaleDtype};

    #[test]
    fn settings_pick_the_format() {
        let f = |b, d| CtFormat::of("e2m1", BlockSize::Elements(b), d);
        assert_eq!(f(16, ScaleDtype::E4m3), Some(CtFormat::Nvfp4));
        assert_eq!(f(32, ScaleDtype::E8m0), Some(CtFormat::Mxfp4));
        assert_eq!(f(32, ScaleDtype::E4m3), None);
        let int4 = |b, d| CtFormat::of("int4_full", BlockSize::Elements(b), d);
        assert_eq!(int4(128, ScaleDtype::Bf16), Some(CtFormat::Int4));
        assert_eq!(int4(12, ScaleDtype::Bf16), None);
        assert_eq!(int4(128, ScaleDtype::E4m3), None);
        assert_eq!(
            CtFormat::of("int4", BlockSize::Elements(128), ScaleDtype::Bf16),
            None
        );
        assert_eq!(
            CtFormat::from_name("nvfp4-pack-quantized"),
            Some(CtFormat::Nvfp4)
        );
        assert_eq!(CtFormat::from_name("pack-quantized"), None);
    }

    #[test]
    fn fused_layers_share_the_largest_amax() {
        let a = |n: &str, v: f32| (n.to_string(), v);
        let m = shared_amax(&[
            a("l.0.self_attn.q_proj.weight", 1.0),
            a("l.0.self_attn.k_proj.weight", 2.0),
            a("l.0.self_attn.v_proj.weight", 0.5),
            a("l.0.self_attn.o_proj.weight", 9.0),
            a("l.0.mlp.experts.3.gate_proj.weight", 4.0),
            a("l.0.mlp.experts.3.up_proj.weight", 3.0),
            a("l.0.mlp.experts.4.gate_proj.weight", 4.0),
        ]);
        assert_eq!(m["l.0.self_attn.q_proj.weight"], 2.0);
        assert_eq!(m["l.0.self_attn.v_proj.weight"], 2.0);
        assert_eq!(m["l.0.mlp.experts.3.up_proj.weight"], 4.0);
        // o_proj is in no group; expert 4's gate alone has nothing to share with.
        assert_eq!(m.len(), 5);
        assert_eq!(
            fused_group("m.layers.1.self_attn.kv_a_proj_with_mqa.weight").as_deref(),
            Some("m.layers.1.self_attn.qkv_a")
        );
    }
}
