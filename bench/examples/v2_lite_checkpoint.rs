//! Writes a DeepSeek-V2-Lite-shaped checkpoint of generated weights, as a Hugging Face
//! checkpoint stores it (`config.json`, one bf16 `model.safetensors`), for engines that can only
//! read files: the side-by-side with llama.cpp (`bench/llama-side-by-side.sh`) converts it with
//! both tools. The shape is the roofline benchmark's ([`v2_lite_config`]); values are Student-t
//! (nu = 5) samples of scale 0.02, streamed from a seeded pool at random offsets; norm weights 1.
//!
//! `cargo run --release -p tquant-bench --example v2_lite_checkpoint -- OUT_DIR [--layers 6]
//! [--vocab 102400]` (6 layers and the full vocabulary: 6.85 GB).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tquant_bench::roofline::{v2_lite_config, v2_lite_config_json};
use tquant_convert::header::{serialize_header, OutEntry};
use tquant_convert::Dtype;
use tquant_formats::sample::Rng;
use tquant_model::synthetic::SyntheticSource;

/// `x` rounded to bf16 (ties to even), little-endian.
fn bf16_bytes(x: f32) -> [u8; 2] {
    let b = x.to_bits();
    (((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16).to_le_bytes()
}

fn run(out: PathBuf, layers: usize, vocab: usize) -> Result<u64, String> {
    let config = v2_lite_config(layers, vocab).map_err(|e| e.to_string())?;
    let mut tensors: Vec<(String, Vec<usize>)> = SyntheticSource::new(&config, 0, false)
        .shapes()
        .iter()
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    tensors.sort();
    let (mut entries, mut pos) = (Vec::new(), 0u64);
    for (name, shape) in &tensors {
        let len = shape.iter().product::<usize>() as u64 * 2;
        entries.push(OutEntry {
            name: name.clone(),
            dtype: Dtype::BF16,
            shape: shape.clone(),
            begin: pos,
            end: pos + len,
        });
        pos += len;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let file = out.join("model.safetensors");
    let io = |e: std::io::Error| format!("{}: {e}", file.display());
    let mut rng = Rng::new(5);
    let pool: Vec<u8> = rng
        .student_t_vec(1 << 20, 5.0)
        .into_iter()
        .flat_map(|v| bf16_bytes(v * 0.02))
        .collect();
    let mut f = BufWriter::new(std::fs::File::create(&file).map_err(io)?);
    let header = serialize_header(&entries, &BTreeMap::new(), 0);
    f.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    f.write_all(&header).map_err(io)?;
    for (name, shape) in &tensors {
        let mut left = shape.iter().product::<usize>() * 2;
        if name.ends_with("norm.weight") {
            for _ in 0..left / 2 {
                f.write_all(&bf16_bytes(1.0)).map_err(io)?;
            }
            continue;
        }
        while left > 0 {
            let start = (rng.below((pool.len() / 2) as u64) as usize) * 2;
            let n = (pool.len() - start).min(left);
            f.write_all(&pool[start..start + n]).map_err(io)?;
            left -= n;
        }
    }
    f.flush().map_err(io)?;
    std::fs::write(out.join("config.json"), v2_lite_config_json(layers, vocab))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(pos)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut out, mut layers, mut vocab) = (None, 6usize, 102400usize);
    while let Some(a) = args.next() {
        let mut num = |flag: &str| -> Result<usize, String> {
            let v = args.next().ok_or(format!("{flag} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{flag}: '{v}' is not a count"))
        };
        let parsed = match a.as_str() {
            "--layers" => num("--layers").map(|n| layers = n),
            "--vocab" => num("--vocab").map(|n| vocab = n),
            _ if out.is_none() && !a.starts_with('-') => {
                out = Some(PathBuf::from(&a));
                Ok(())
            }
            _ => Err(format!("unexpected argument '{a}'")),
        };
        if let Err(e) = parsed {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("usage: v2_lite_checkpoint OUT_DIR [--layers N] [--vocab N]");
        return ExitCode::from(2);
    };
    match run(out.clone(), layers, vocab) {
        Ok(bytes) => {
            println!(
                "{}: {:.2} GB of bf16 tensors",
                out.display(),
                bytes as f64 / 1e9
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
