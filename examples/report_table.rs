//! The README's accuracy-vs-area rows for a few formats on the bundled model: blocks of 64,
//! f32 scales, bits per byte on the first 65,792 bytes of the held-out text in windows of 256.
use std::path::Path;
use tquant::formats::{BlockSize, ScaleDtype};
use tquant::report::{EvalText, Recipe, Report, Setting};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("examples/tiny-lite");
    let text = root.join("tests/data/model/heldout_head.txt");
    let eval = EvalText::read(&model, &text, 256, 65792)?;
    let block = BlockSize::Elements(64);
    let setting = Setting {
        block,
        scale_dtype: ScaleDtype::F32,
    };
    let names = ["int4_full", "apot4_sp", "nf4", "sf4", "e2m1"];
    let recipes = names
        .map(|r| r.parse::<Recipe>())
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let report = Report::with_text(&model, &recipes, &setting, &eval)?;
    let f32_bpb = report.header.bits_per_byte_f32.unwrap_or(f64::NAN);
    println!(
        "f32: {f32_bpb:.4} bits per byte\n{}",
        report.summary_table()
    );
    Ok(())
}
