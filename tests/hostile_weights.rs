//! Weights that are not ordinary numbers: NaN and infinities are refused with the tensor's name
//! and the count of bad values; subnormals and all-zero blocks quantize to finite values.

use crate::hostile_support;

use hostile_support::*;
use tquant::convert::{quantize_tensor, Checkpoint, ConvertOptions, Dtype, Layout, Policy, Weight};

const UP: &str = "model.layers.0.mlp.up_proj.weight";

/// A checkpoint whose `UP` matrix (32x64 f32) has `bad` at the given positions.
fn with_bad_values(dir: &std::path::Path, bad: &[(usize, f32)]) {
    let mut v = values(2048, 5);
    for &(i, x) in bad {
        v[i] = x;
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        st_bytes(
            &[
                f32s("model.embed_tokens.weight", &[4, 64], &values(256, 1)),
                f32s(UP, &[32, 64], &v),
            ],
            &[],
        ),
    )
    .unwrap();
}

#[test]
fn convert_refuses_nan_and_inf_naming_tensor_and_count() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nan");
    with_bad_values(
        &dir,
        &[
            (0, f32::NAN),
            (77, f32::INFINITY),
            (1000, f32::NEG_INFINITY),
            (2047, -f32::NAN),
        ],
    );
    let out = tmp.path().join("out");
    for format in ["sf4", "nf4", "int4", "e2m1"] {
        let res = tquant(&["convert", p(&dir), "-o", p(&out), "--format", format]);
        assert_clean_error(
            &res,
            &[
                "model.safetensors",
                &format!("'{UP}'"),
                "has 4 NaN or infinite values (of 2048)",
            ],
        );
        assert!(!out.exists(), "{format}: an output was left");
        assert_eq!(
            listing(tmp.path()),
            ["nan"],
            "{format}: temporary files left"
        );
    }
}

#[test]
fn convert_refuses_non_finite_half_precision_and_names_the_expert() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bf16");
    std::fs::create_dir_all(&dir).unwrap();
    // bf16: 0x7fc0 NaN, 0xff80 -inf; f16: 0x7c00 +inf.
    let mut bf16 = vec![0x3f80u16; 2 * 16 * 32];
    bf16[16 * 32 + 3] = 0x7fc0;
    bf16[16 * 32 + 9] = 0xff80;
    let mut f16 = vec![0x3c00u16; 16 * 64];
    f16[5] = 0x7c00;
    let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(
        dir.join("model.safetensors"),
        st_bytes(
            &[
                t(
                    "model.layers.0.mlp.experts.gate_up_proj",
                    "BF16",
                    &[2, 16, 32],
                    le(&bf16),
                ),
                t(
                    "model.layers.1.self_attn.o_proj.weight",
                    "F16",
                    &[16, 64],
                    le(&f16),
                ),
            ],
            &[],
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let experts = tquant(&["convert", p(&dir), "-o", p(&out), "--exclude", "*.o_proj.*"]);
    assert_clean_error(
        &experts,
        &[
            "'model.layers.0.mlp.experts.gate_up_proj (expert 1)'",
            "has 2 NaN or infinite values (of 512)",
        ],
    );
    let half = tquant(&[
        "convert",
        p(&dir),
        "-o",
        p(&out),
        "--exclude",
        "*.experts.*",
    ]);
    assert_clean_error(
        &half,
        &[
            "'model.layers.1.self_attn.o_proj.weight'",
            "has 1 NaN or infinite values (of 1024)",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn quantize_tensor_refuses_non_finite_values_with_their_count() {
    let mut v = values(256, 2);
    v[3] = f32::NAN;
    v[200] = f32::INFINITY;
    let err = quantize_tensor("w", &v, &[4, 64], Dtype::F32, &ConvertOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'w'") && err.contains("2 NaN or infinite values (of 256)"),
        "{err}"
    );
}

/// Rows: an all-zero row, a row of subnormals, a row mixing zero blocks and subnormal blocks
/// with normal ones, a row with one huge value beside tiny ones.
fn awkward_matrix() -> Vec<f32> {
    let cols = 128;
    let mut m = vec![0.0f32; 4 * cols];
    for c in 0..cols {
        let sign = if c % 3 == 0 { -1.0 } else { 1.0 };
        m[cols + c] = sign * f32::from_bits(1 + (c as u32 * 7919) % 0x7f_ffff);
        m[2 * cols + c] = match c / 32 {
            0 => 0.0,
            1 => sign * f32::MIN_POSITIVE * 0.25,
            2 => sign * (c as f32 - 80.0) * 0.01,
            _ => sign * f32::from_bits(1),
        };
        m[3 * cols + c] = if c == 5 { 3.0e38 } else { sign * 1e-30 };
    }
    m
}

fn assert_finite(name: &str, values: &[f32], original: &[f32]) {
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    assert_eq!(bad, 0, "{name}: {bad} non-finite values");
    for (i, (&q, &w)) in values.iter().zip(original).enumerate() {
        if w == 0.0 && i < 128 {
            assert_eq!(
                q, 0.0,
                "{name}: the all-zero row must stay zero (element {i})"
            );
        }
    }
}

#[test]
fn subnormals_and_zero_blocks_quantize_to_finite_values() {
    let m = awkward_matrix();
    let zeros = vec![0.0f32; 4 * 128];
    let tiny = vec![f32::from_bits(3); 4 * 128];
    let combos: &[(&str, &str, &str, Layout)] = &[
        ("sf4", "64", "f16", Layout::Tquant),
        ("sf4", "32", "f32", Layout::Tquant),
        ("sf4", "row", "bf16", Layout::Tquant),
        ("sf3", "16", "f16", Layout::Tquant),
        ("nf4", "64", "f16", Layout::Tquant),
        ("int4", "32", "bf16", Layout::Tquant),
        ("e2m1", "32", "e8m0", Layout::Tquant),
        ("e2m1", "32", "e8m0", Layout::Mxfp4),
        ("nf4", "64", "f32", Layout::Tquant),
    ];
    for &(format, block, scale, layout) in combos {
        let opts = ConvertOptions::from_args(
            Some(format),
            None,
            Some(block),
            Some(scale),
            layout,
            Policy::default(),
        )
        .unwrap();
        for (what, input) in [
            ("mixed", &m),
            ("all zero", &zeros),
            ("all subnormal", &tiny),
        ] {
            let label = format!("{format}/{block}/{scale}/{layout:?} {what}");
            let q = quantize_tensor("w", input, &[4, 128], Dtype::F32, &opts)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            for mi in &q.info.matrices {
                if let Some(nu) = mi.nu {
                    assert!(nu.is_finite(), "{label}: nu {nu}");
                }
            }
            assert_finite(&label, &q.dequantize(), input);
        }
    }
}

#[test]
fn convert_of_subnormal_and_zero_weights_reads_back_finite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    let m = awkward_matrix();
    std::fs::write(
        dir.join("model.safetensors"),
        st_bytes(
            &[
                f32s(UP, &[4, 128], &m),
                f32s(
                    "model.layers.0.mlp.down_proj.weight",
                    &[4, 128],
                    &[0.0; 512],
                ),
                f32s(
                    "model.layers.0.mlp.experts.gate_up_proj",
                    &[2, 4, 64],
                    &[f32::from_bits(1); 512],
                ),
            ],
            &[],
        ),
    )
    .unwrap();
    for (layout, scale) in [("tquant", "f16"), ("tquant", "bf16"), ("mxfp4", "e8m0")] {
        let out = tmp.path().join(format!("out-{layout}-{scale}"));
        assert_success(&tquant(&[
            "convert",
            p(&dir),
            "-o",
            p(&out),
            "--layout",
            layout,
            "--scale-dtype",
            scale,
        ]));
        let q = Checkpoint::open(&out).unwrap();
        for name in q.names() {
            let Weight::Quantized(v) = q.get(name).unwrap() else {
                continue;
            };
            let deq = v.dequantize().unwrap();
            assert!(deq.iter().all(|x| x.is_finite()), "{layout}/{scale} {name}");
        }
        assert_success(&tquant(&["verify", p(&dir), p(&out)]));
        assert_success(&tquant(&["inspect", p(&out)]));
    }
}
