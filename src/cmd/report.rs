//! `tquant report`: quantize a model in memory with every format asked for, measure the weight
//! error and the bits per byte each costs, and set them against the MAC area of the format
//! (Table 10 of Dotzel et al. where published, tquant's area model everywhere).

mod canvas;
mod measure;
mod output;
mod plot;
mod table;

use super::calibration::{calibrated_variant_name, describe, CalibrateArgs};
use super::progress;
use super::text_input::{self, TokenizedText};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use tquant_convert::calibration::Calibration;
use tquant_formats::{area, BlockSize, ScaleDtype};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint directory with the original (unquantized) weights.
    pub model: PathBuf,
    /// Text for bits per byte (tokenized with the model's tokenizer.json, or byte by byte for a
    /// byte vocabulary); not needed with --weights-only.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Tokens scored per chunk: each chunk of window + 1 tokens scores its last `window`.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Use the first N bytes of the text, cut before tokenizing (a trailing partial chunk is
    /// dropped).
    #[arg(long, default_value_t = 65792)]
    pub max_bytes: usize,
    /// `all` (every catalog format, sf4_fit, sf4_search, auto, auto+search) or a comma-separated
    /// list: catalog names, sf4:nu=X, sf4_fit / sf3_fit (nu fitted per tensor), sf4_search /
    /// sf3_search (nu with the least weight error per tensor), auto / auto:A/B/.. (per tensor
    /// the candidate with the least weight error), custom:v0,v1,... (last). A `+search` suffix
    /// searches each block's scale instead of the absmax rule (`nf4+search`, `auto+search`).
    #[arg(long, default_value = "all")]
    pub formats: String,
    /// Block length (16..4096) or `row`.
    #[arg(long, default_value = "64")]
    pub block: BlockSize,
    /// Scale dtype: f32, f16, bf16 or e8m0.
    #[arg(long, default_value = "f16")]
    pub scale_dtype: ScaleDtype,
    /// Only quantize and report weight errors (any safetensors model; no runner, no text).
    #[arg(long)]
    pub weights_only: bool,
    /// Output directory (created if missing; an existing report in it is replaced only with
    /// --force; a directory holding other files is refused).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Replace the report files of an existing output directory (one holding other files is
    /// refused).
    #[arg(long)]
    pub force: bool,
    /// With --calibrate, every format also gets a calibrated row (GPTQ): `gptq:<format>`, and
    /// `auto+gptq` for `auto` (its choice by the activation-weighted error).
    #[command(flatten)]
    pub calibration: Box<CalibrateArgs>,
}

struct Eval {
    config: tquant_model::Config,
    ids: Vec<u32>,
    /// Bytes of the text the scored tokens cover.
    bytes: usize,
    path: PathBuf,
}

/// The files a report writes (and their temporary names while it writes them).
const REPORT_FILES: [&str; 5] = [
    "report.json",
    "report.md",
    "report.csv",
    "pareto.svg",
    "pareto.pdf",
];

fn is_report_file(name: &str) -> bool {
    REPORT_FILES
        .iter()
        .any(|f| name == *f || name.starts_with(&format!(".{f}.tmp")))
}

/// A missing or empty directory is fine; an earlier report is replaced only with --force;
/// anything else in the directory is refused, named, before any work starts.
fn check_output(dir: &std::path::Path, force: bool) -> Result<()> {
    let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if !empty {
        tquant_convert::check_output(dir, force, &is_report_file)?;
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if args.text.is_none() && !args.weights_only {
        anyhow::bail!(
            "report needs --text FILE to measure bits per byte, or --weights-only to report \
             only the weight errors (any safetensors model)"
        );
    }
    check_output(&args.output, args.force)?;
    let source = tquant_model::checkpoint_source(&args.model)?;
    let ckpt = source.checkpoint();
    let variants = measure::parse_variants(&args.formats, args.block, args.scale_dtype)?;
    let calibration = args.calibration.collect(&args.model, 0)?;
    let variants = match &calibration {
        Some(cal) => with_calibrated_twins(variants, cal),
        None => variants,
    };
    let eval = match (&args.text, args.weights_only) {
        (Some(path), false) => {
            let config = tquant_model::Config::from_path(&args.model)?;
            let vocab = text_input::vocabulary(&args.model, config.vocab_size, "`tquant eval`")?;
            let text = TokenizedText::read(&vocab, path, 0, Some(args.max_bytes))?;
            Some(Eval {
                bytes: text.scored_bytes(args.window),
                ids: text.ids,
                config,
                path: path.clone(),
            })
        }
        _ => None,
    };

    let steps = variants.len() as u64 + u64::from(eval.is_some());
    let bar = progress::bar(steps);

    let mut baseline = None;
    if let Some(e) = &eval {
        bar.set_message("f32 baseline");
        let s =
            measure::bits_per_byte(&source, &e.config, Vec::new(), &e.ids, args.window, e.bytes)?;
        baseline = Some(s);
        bar.inc(1);
    }
    let mut measured = Vec::with_capacity(variants.len());
    for v in &variants {
        bar.set_message(v.name.clone());
        let q = measure::quantize_checkpoint(ckpt, v)?;
        let mut m = q.measured;
        if let Some(e) = &eval {
            let s =
                measure::bits_per_byte(&source, &e.config, q.tensors, &e.ids, args.window, e.bytes)
                    .with_context(|| format!("evaluating {}", v.name))?;
            m.bits_per_byte = Some(s);
        }
        measured.push(m);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let coef = area::calibrated();
    let checks = area::check_against_table10();
    let rows = table::build_rows(&measured, baseline, &coef);
    let loss = if eval.is_some() {
        "delta_bits_per_byte"
    } else {
        "nmse"
    };
    let header = output::Header {
        model: args.model.display().to_string(),
        text: eval.as_ref().map(|e| e.path.display().to_string()),
        window: eval.as_ref().map(|_| args.window),
        max_bytes: eval.as_ref().map(|_| args.max_bytes),
        scored_bytes: eval.as_ref().map(|e| e.bytes),
        block: args.block.to_string(),
        scale_dtype: args.scale_dtype.name().to_string(),
        weights_only: eval.is_none(),
        calibration: calibration.as_deref().map(describe),
        bits_per_byte_f32: baseline,
        accuracy_loss: loss,
        nmse_definition:
            "sum of squared errors / sum of squared weights over every quantized tensor",
        bits_per_weight_definition:
            "(code bits x weights + scale bits) / weights over every quantized tensor",
    };

    let dir = &args.output;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = output::markdown(&header, &rows, &checks);
    let loss_label = if eval.is_some() {
        "bits per byte lost (quantized - f32)"
    } else {
        "weight NMSE"
    };
    output::write_atomic(
        &dir.join("report.json"),
        output::json(&header, &rows, &coef, &checks)?.as_bytes(),
    )?;
    output::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    output::write_atomic(&dir.join("report.csv"), output::csv(&rows).as_bytes())?;
    let plot = plot::pareto_plot(&rows, loss_label);
    output::write_atomic(&dir.join("pareto.svg"), plot.canvas.svg().as_bytes())?;
    output::write_atomic(&dir.join("pareto.pdf"), &plot.canvas.pdf())?;
    super::convert::emit(&md)
}

/// Each variant followed by its calibrated twin (same options, with the calibration).
fn with_calibrated_twins(
    variants: Vec<measure::Variant>,
    cal: &Arc<Calibration>,
) -> Vec<measure::Variant> {
    variants
        .into_iter()
        .flat_map(|v| {
            let mut c = v.clone();
            c.name = calibrated_variant_name(&v.name);
            c.opts.calibration = Some(cal.clone());
            [v, c]
        })
        .collect()
}
