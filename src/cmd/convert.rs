//! `tquant convert`: quantize a safetensors checkpoint into a self-describing quantized one.

use super::calibration::CalibrateArgs;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use tquant_convert::convert::{NoProgress, Progress, RunOptions};
use tquant_convert::options::{parse_block, parse_scale_dtype};
use tquant_convert::{ConvertSummary, Layout, Policy, Recipe};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .safetensors file, or a directory with model.safetensors or shards and their index.
    pub input: PathBuf,
    /// Output directory (written atomically; refused if it exists unless --force).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Recipe: a format (nf4, int4, e2m1, ...; see `tquant formats`), where sf4 is Student
    /// Float at nu = 5, sf4:nu=3.5 another nu, sf4_fit nu fitted per tensor and sf4_search the
    /// nu with the least error; `+search` searches each block's scale (nf4+search); `auto`
    /// chooses per tensor (per expert) the format with the least weight error among nf4, sf4
    /// (nu searched), apot4_sp, e2m1_sp, int4 and int4_full, `auto:LIST` among LIST (comma- or
    /// /-separated), at the same bits per weight; `gptq:nf4` (`auto+gptq`) quantizes with GPTQ
    /// and needs --calibrate or --calibrate-self. Default: sf4_fit (nf4 for --layout bnb, e2m1
    /// for --layout mxfp4).
    #[arg(long)]
    pub format: Option<String>,
    /// Elements per block (16..4096) or `row`. Default: 64 (32 for mxfp4).
    #[arg(long)]
    pub block: Option<String>,
    /// Scale dtype: f32, f16, bf16, e8m0. Default: f16 (f32 for bnb, e8m0 for mxfp4).
    #[arg(long)]
    pub scale_dtype: Option<String>,
    /// Student Float degrees of freedom, overriding the recipe's: a number; `fit` (per tensor
    /// and per expert, the maximum-likelihood fit of block-standardised values); or `search`
    /// (per tensor and per expert, the nu with the least quantization error; slower). For the
    /// plain sf candidates of --format auto, fit or search (default search).
    #[arg(long)]
    pub nu: Option<String>,
    /// Block scales, overriding the recipe's: `absmax` (the block's largest magnitude onto the
    /// table's, the paper's rule; the default) or `search` (per block, the scale with the least
    /// squared error, stored in the same dtype; may be negative). tquant layout only.
    #[arg(long)]
    pub scale_rule: Option<String>,
    /// On-disk layout: tquant, bnb (bitsandbytes NF4 as transformers saves it), mxfp4
    /// (OCP MXFP4 as Hugging Face stores it).
    #[arg(long, default_value = "tquant")]
    pub layout: String,
    /// Also quantize tensors matching this glob (`*` and `?`); repeatable.
    #[arg(long)]
    pub include: Vec<String>,
    /// Keep tensors matching this glob unquantized; repeatable; wins over --include. An FP8
    /// weight kept this way is written dequantized as BF16 (its block scales are not written).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Leave tensors matching this glob out of the output entirely; repeatable; a glob that
    /// matches no tensor is an error. E.g. DeepSeek-V3's multi-token-prediction layer, which
    /// inference does not run: --drop 'model.layers.61.*'.
    #[arg(long)]
    pub drop: Vec<String>,
    /// Worker threads (0: one per core, the default).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing output that tquant wrote (a directory holding anything else is
    /// refused, never deleted).
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub calibration: Box<CalibrateArgs>,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total_bytes: u64) {
        self.0.set_length(total_bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub fn run(args: Args) -> Result<()> {
    let layout: Layout = args.layout.parse().map_err(anyhow::Error::msg)?;
    let default = match layout {
        Layout::Tquant => "sf4_fit",
        Layout::Bnb => "nf4",
        Layout::Mxfp4 => "e2m1",
    };
    let (recipe, mut b) = Recipe::parse_builder(args.format.as_deref().unwrap_or(default))?;
    b = b.layout(layout).policy(Policy {
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        drop: args.drop.clone(),
    });
    if let Some(nu) = &args.nu {
        b = b.nu(nu.parse()?);
    }
    if let Some(block) = &args.block {
        b = b.block(parse_block(block)?);
    }
    if let Some(d) = &args.scale_dtype {
        b = b.scale_dtype(parse_scale_dtype(d)?);
    }
    if let Some(rule) = &args.scale_rule {
        b = b.scale_rule(rule.parse().map_err(anyhow::Error::msg)?);
    }
    let mut opts = b.build()?;
    let c = &args.calibration;
    if recipe.gptq && c.calibrate.is_none() && c.calibrate_self.is_none() {
        bail!(
            "recipe '{recipe}' quantizes with GPTQ and needs calibration: pass --calibrate FILE \
             or --calibrate-self N"
        );
    }
    let layerwise = args.calibration.layerwise(
        &args.input,
        &args.output,
        &opts,
        args.threads.unwrap_or(0),
        args.force,
    )?;
    opts.staged_calibration = layerwise.as_ref().map(|l| l.staged());
    opts.validate()?;
    let run = RunOptions {
        force: args.force,
        threads: args.threads,
    };
    let summary = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        let bar = Bar(bar);
        let s = tquant_convert::convert(&args.input, &args.output, &opts, &run, &bar);
        bar.0.finish_and_clear();
        s
    } else {
        tquant_convert::convert(&args.input, &args.output, &opts, &run, &NoProgress)
    }
    .with_context(|| format!("converting {}", args.input.display()))?;
    let mut out = String::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        write_text(&mut out, &summary)?;
        if let Some(cal) = &layerwise {
            writeln!(out, "{}", cal.describe())?;
        }
    }
    emit(&out)
}

/// Prints command output; a closed pipe (`| head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn write_text(out: &mut String, s: &ConvertSummary) -> std::fmt::Result {
    let nu = match &s.nu {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(v) => format!(" nu={v}"),
        v => format!(" nu={v}"),
    };
    writeln!(
        out,
        "{} -> {} ({} layout, {}{nu}, block {}, {} {} scales)",
        s.input.display(),
        s.output.display(),
        s.layout,
        s.format,
        s.block,
        s.scale_dtype,
        s.scale_rule
    )?;
    writeln!(
        out,
        "{} tensors: {} quantized, {} kept, {} skipped; {} of {} parameters quantized",
        s.tensors.len(),
        s.quantized,
        s.kept,
        s.skipped,
        s.params_quantized,
        s.params
    )?;
    if !s.dropped.is_empty() {
        writeln!(
            out,
            "dropped {} tensor(s) (--drop): {}",
            s.dropped.len(),
            some_names(&s.dropped)
        )?;
    }
    if !s.dequantized.is_empty() {
        writeln!(
            out,
            "{} FP8 tensor(s) kept unquantized, written dequantized as BF16: {}",
            s.dequantized.len(),
            some_names(&s.dequantized)
        )?;
    }
    let mut nus: Vec<f64> = s
        .tensors
        .iter()
        .flat_map(|t| t.nu.iter().flatten().copied())
        .collect();
    if !nus.is_empty() && (s.nu == "fit" || s.nu == "search") {
        nus.sort_by(f64::total_cmp);
        writeln!(
            out,
            "nu over {} matrices: min {:.3}, median {:.3}, max {:.3}",
            nus.len(),
            nus[0],
            nus[nus.len() / 2],
            nus[nus.len() - 1]
        )?;
    }
    if s.format.starts_with("auto") {
        // How often each format won, by family (sf4:nu=... counts as sf4).
        let mut won = std::collections::BTreeMap::<&str, usize>::new();
        for f in s.tensors.iter().flat_map(|t| t.formats.iter()) {
            *won.entry(f.split(':').next().unwrap_or(f)).or_default() += 1;
        }
        let list: Vec<String> = won.iter().map(|(f, n)| format!("{f} {n}")).collect();
        writeln!(out, "chosen per matrix: {}", list.join(", "))?;
    }
    writeln!(
        out,
        "{:.1} MB -> {:.1} MB ({:.3} bits per weight overall) in {:.2} s ({:.1} MB/s, {} threads)",
        s.input_bytes as f64 / 1e6,
        s.output_bytes as f64 / 1e6,
        s.bits_per_weight,
        s.seconds,
        s.mb_per_s,
        s.threads
    )
}

/// The first few names of a list, and how many more there are.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        let _ = write!(text, ", ... ({} more)", names.len() - SHOWN);
    }
    text
}
