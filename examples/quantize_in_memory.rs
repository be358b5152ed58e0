//! Quantizes the bundled model to NF4 in memory (blocks of 64, f16 scales), runs it on a
//! prompt and prints the bits per byte it spends on the prompt (a byte vocabulary: one token a
//! byte, the first token unscored).
use std::path::Path;
use tquant::model::{eval::score_windows, Options};
use tquant::report::{open_quantized, Setting};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tiny-lite");
    let model = open_quantized(
        &dir,
        &"nf4".parse()?,
        &Setting::default(),
        Options::default(),
    )?;
    let prompt = "The quick brown fox jumps over the lazy dog, and the dog sleeps on.";
    let ids: Vec<u32> = prompt.bytes().map(u32::from).collect();
    let score = score_windows(&model, &ids, ids.len() - 1, usize::MAX)?;
    let bytes = score.tokens;
    println!(
        "nf4 in memory: {:.4} bits per byte over {bytes} bytes",
        score.bits / bytes as f64
    );
    Ok(())
}
