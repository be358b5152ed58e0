//! Float dtypes of checkpoint tensors and their conversion to f32.

use half::{bf16, f16};
use safetensors::Dtype;

/// True for the dtypes a weight can be read from (and quantized from).
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

/// Appends the little-endian values of `bytes` (of `dtype`) to `out` as f32. Returns `false`
/// for a dtype that is not a float. Unaligned bytes are fine.
pub fn extend_f32(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) -> bool {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
        Dtype::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
        ),
        _ => return false,
    }
    true
}

/// Number of NaN or infinite values.
pub fn count_non_finite(values: &[f32]) -> usize {
    values.iter().filter(|v| !v.is_finite()).count()
}

/// The dtype name transformers' bitsandbytes quant_state uses (`"bfloat16"`).
pub fn torch_name(dtype: Dtype) -> Option<&'static str> {
    Some(match dtype {
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
        Dtype::BF16 => "bfloat16",
        Dtype::F64 => "float64",
        _ => return None,
    })
}

/// The inverse of [`torch_name`].
pub fn from_torch_name(name: &str) -> Option<Dtype> {
    Some(match name.strip_prefix("torch.").unwrap_or(name) {
        "float32" => Dtype::F32,
        "float16" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "float64" => Dtype::F64,
        _ => return None,
    })
}

/// True for the FP8 dtypes a weight can be stored in (with block scales).
pub fn is_fp8(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F8_E4M3 | Dtype::F8_E5M2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_float_dtype() {
        let x = [1.5f32, -2.25, 0.0];
        for (dtype, bytes) in [
            (
                Dtype::F32,
                x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>(),
            ),
            (
                Dtype::BF16,
                x.iter()
                    .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            (
                Dtype::F16,
                x.iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        ] {
            let mut out = Vec::new();
            assert!(extend_f32(dtype, &bytes, &mut out));
            assert_eq!(out, x);
        }
        assert!(!extend_f32(Dtype::U8, &[1], &mut Vec::new()));
    }
}
