//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! entry points on stable Rust, so every input the fuzzers kept, including every crash that was
//! found and fixed, stays checked by CI. The seed generator that started the corpora is here too
//! (ignored: run it by hand to refresh the seeds).

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_entry;
use crate::hostile_support;

use hostile_support::*;
use std::path::{Path, PathBuf};
use tquant::convert::convert::{NoProgress, RunOptions};
use tquant::convert::{convert, ConvertOptions, Layout, Policy};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: corpus is missing", dir.display());
    files
}

fn replay(target: &str, entry: fn(&[u8])) {
    for file in corpus(target) {
        let bytes = std::fs::read(&file).unwrap();
        let run = std::panic::catch_unwind(|| entry(&bytes));
        assert!(run.is_ok(), "{target}: {} panics", file.display());
    }
}

#[test]
fn safetensors_reader_corpus_replays_without_panics() {
    replay("safetensors_reader", fuzz_entry::safetensors_reader);
}

#[test]
fn quantized_reader_corpus_replays_without_panics() {
    replay("quantized_reader", fuzz_entry::quantized_reader);
}

/// Each reader's inputs through the other target too (cheap, and widens both).
#[test]
fn corpora_cross_replay_without_panics() {
    replay("quantized_reader", fuzz_entry::safetensors_reader);
    replay("safetensors_reader", fuzz_entry::quantized_reader);
}

/// Writes the seed inputs the corpora started from into `$TQUANT_FUZZ_SEEDS/<target>/`:
/// small valid checkpoints (every dtype, every quantized layout and scale dtype, 2-D and
/// 3-D) and hand-made malformed ones.
#[test]
#[ignore = "writes fuzz seeds; run by hand"]
fn write_fuzz_seeds() {
    let out = PathBuf::from(std::env::var("TQUANT_FUZZ_SEEDS").expect("TQUANT_FUZZ_SEEDS"));
    let st = out.join("safetensors_reader");
    let qr = out.join("quantized_reader");
    std::fs::create_dir_all(&st).unwrap();
    std::fs::create_dir_all(&qr).unwrap();
    let save = |dir: &Path, name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    // Plain safetensors files.
    save(
        &st,
        "dtypes",
        &st_bytes(
            &[
                f32s("f32", &[2, 3], &values(6, 1)),
                t("f16", "F16", &[3], vec![0, 60, 0, 188, 1, 0]),
                t("bf16", "BF16", &[2], vec![128, 63, 128, 191]),
                t("f64", "F64", &[1], 1.5f64.to_le_bytes().to_vec()),
                t("u8", "U8", &[4], vec![1, 2, 3, 4]),
                t("i64", "I64", &[1], 7i64.to_le_bytes().to_vec()),
                t("bool", "BOOL", &[2], vec![0, 1]),
                t("empty", "F32", &[0, 3], vec![]),
                t("scalar", "F32", &[], 2.0f32.to_le_bytes().to_vec()),
            ],
            &[("format", "pt")],
        ),
    );
    save(&st, "empty_header", &raw_file("{}", &[]));
    save(
        &st,
        "overlap",
        &raw_file(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#,
            &[0; 24],
        ),
    );
    save(
        &st,
        "size_mismatch",
        &raw_file(
            r#"{"w":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ),
    );
    save(
        &st,
        "bnb_state_only",
        &st_bytes(
            &[t(
                "w.quant_state.bitsandbytes__nf4",
                "U8",
                &[2],
                b"{}".to_vec(),
            )],
            &[],
        ),
    );

    // Quantized checkpoints made by the converter, one per layout and scale dtype.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("model.safetensors"),
        st_bytes(
            &[
                f32s(
                    "model.layers.0.mlp.up_proj.weight",
                    &[2, 64],
                    &values(128, 3),
                ),
                f32s(
                    "model.layers.0.mlp.experts.gate_up_proj",
                    &[2, 2, 32],
                    &values(128, 4),
                ),
                f32s("model.norm.weight", &[4], &[1.0; 4]),
            ],
            &[("format", "pt")],
        ),
    )
    .unwrap();
    /// (seed name, format, block, scale dtype, layout)
    type Variant<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Layout,
    );
    let variants: [Variant; 7] = [
        ("sf4_fit_f16", None, None, None, Layout::Tquant),
        (
            "nf4_row_f32",
            Some("nf4"),
            Some("row"),
            Some("f32"),
            Layout::Tquant,
        ),
        (
            "int4_bf16",
            Some("int4"),
            Some("16"),
            Some("bf16"),
            Layout::Tquant,
        ),
        (
            "e2m1_e8m0",
            Some("e2m1"),
            Some("32"),
            Some("e8m0"),
            Layout::Tquant,
        ),
        (
            "sf3_fixed",
            Some("sf3:nu=5"),
            Some("16"),
            Some("f16"),
            Layout::Tquant,
        ),
        (
            "apot4",
            Some("apot4"),
            Some("16"),
            Some("f16"),
            Layout::Tquant,
        ),
        ("mxfp4", None, None, None, Layout::Mxfp4),
    ];
    for (name, format, block, scale, layout) in variants {
        let Ok(opts) =
            ConvertOptions::from_args(format, None, block, scale, layout, Policy::default())
        else {
            eprintln!("skipping {name}: options not accepted");
            continue;
        };
        let dst = tmp.path().join(name);
        convert(&src, &dst, &opts, &RunOptions::default(), &NoProgress).unwrap();
        save(
            &qr,
            name,
            &std::fs::read(dst.join("model.safetensors")).unwrap(),
        );
    }

    // bitsandbytes NF4 as transformers saves it (hand-made: 2x64, blocks of 64).
    let nf4_format: tquant::formats::Format = "nf4".parse().unwrap();
    let nf4 = nf4_format.codebook().values().to_vec();
    let state = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2, 64]}"#;
    save(
        &qr,
        "bnb_nf4",
        &st_bytes(
            &[
                t(
                    "model.layers.0.mlp.up_proj.weight",
                    "U8",
                    &[64, 1],
                    (0..64u8).map(|b| b.wrapping_mul(37)).collect(),
                ),
                f32s(
                    "model.layers.0.mlp.up_proj.weight.absmax",
                    &[2],
                    &[0.5, 2.0],
                ),
                f32s("model.layers.0.mlp.up_proj.weight.quant_map", &[16], &nf4),
                t(
                    "model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4",
                    "U8",
                    &[state.len()],
                    state.to_vec(),
                ),
            ],
            &[("format", "pt")],
        ),
    );
}
