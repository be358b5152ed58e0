//! A whole report: every variant quantized and measured, the rows with their area columns and
//! Pareto flags, and the files written from them.

use crate::conversion::CalibrationRequest;
use crate::measure::{self, parse_variants, with_calibrated_twins, Variant};
use crate::output::{self, Header};
use crate::table::{self, Row};
use crate::text_input::TokenizedText;
use crate::{ReportError, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tquant_convert::calibration::Calibration;
use tquant_formats::area::{self, Coefficients, ModelCheck};
use tquant_formats::{BlockSize, ScaleDtype};
use tquant_model::Config;

/// The version of report.json's layout: raised when a field is renamed or removed or its
/// meaning changes (new fields keep it).
pub const SCHEMA_VERSION: u32 = 1;

/// The files a report writes.
pub const REPORT_FILES: [&str; 5] = [
    "report.json",
    "report.md",
    "report.csv",
    "pareto.svg",
    "pareto.pdf",
];

/// Block length and scale dtype every variant uses.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Block length.
    pub block: BlockSize,
    /// Scale dtype.
    pub scale_dtype: ScaleDtype,
}

impl Default for Setting {
    /// The README's: blocks of 64 with f16 scales.
    fn default() -> Self {
        Self {
            block: BlockSize::Elements(64),
            scale_dtype: ScaleDtype::F16,
        }
    }
}

/// The text bits per byte are measured on, as the model's token ids.
#[derive(Debug)]
pub struct EvalText {
    /// The model's configuration.
    pub config: Config,
    /// The text's token ids.
    pub ids: Vec<u32>,
    /// Bytes of the text the scored tokens cover.
    pub bytes: usize,
    /// The text file.
    pub path: PathBuf,
    /// Tokens scored per chunk (each chunk of window + 1 tokens scores its last `window`).
    pub window: usize,
    /// The bytes of the text used (cut before tokenizing).
    pub max_bytes: usize,
}

impl EvalText {
    /// The first `max_bytes` of `path`, tokenized with the vocabulary of the model at `model`.
    pub fn read(model: &Path, path: &Path, window: usize, max_bytes: usize) -> Result<Self> {
        let config = Config::from_path(model)?;
        let vocab = tquant_text::Vocabulary::open(model, Some(config.vocab_size))?;
        let text = TokenizedText::read(&vocab, path, 0, Some(max_bytes))?;
        Ok(Self {
            bytes: text.scored_bytes(window),
            ids: text.ids,
            config,
            path: path.to_path_buf(),
            window,
            max_bytes,
        })
    }
}

/// A report as a front end's settings give it: [`ReportRequest::run`].
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The checkpoint with the original (unquantized) weights.
    pub model: PathBuf,
    /// The text bits per byte are measured on; `None`: weight errors only.
    pub text: Option<PathBuf>,
    /// Tokens scored per chunk.
    pub window: usize,
    /// The bytes of the text used (cut before tokenizing).
    pub max_bytes: usize,
    /// `all` or a comma-separated list of recipes ([`parse_variants`]).
    pub formats: String,
    /// Block length and scale dtype of every variant.
    pub setting: Setting,
    /// The directory the report goes to ([`check_output`]).
    pub output: PathBuf,
    /// Replace the report files of an existing output directory.
    pub force: bool,
    /// Calibration: with it, every format also gets a calibrated (GPTQ) twin.
    pub calibration: CalibrationRequest,
}

impl ReportRequest {
    /// Checks the output directory and the model, parses the format list (its errors as
    /// [`ReportError::Input`]), collects the calibration when asked for, reads the text (its
    /// errors as [`ReportError::Input`]) and measures; `step(steps, what)` is called before each
    /// of the steps measured, with their number. The report is not written.
    pub fn run(&self, mut step: impl FnMut(u64, &str)) -> Result<Report> {
        check_output(&self.output, self.force)?;
        tquant_model::checkpoint_source(&self.model)?;
        let input = |input| {
            move |e| ReportError::Input {
                input,
                source: Box::new(e),
            }
        };
        let Setting { block, scale_dtype } = self.setting;
        let mut variants = parse_variants(&self.formats, block, scale_dtype)
            .map_err(input(ReportInput::FormatList))?;
        let collect = |c: &crate::CalibrationOptions| c.collect(&self.model, 0).map(Arc::new);
        let calibration = self.calibration.run(&self.model, collect)?;
        if let Some(cal) = &calibration {
            variants = with_calibrated_twins(variants, cal);
        }
        let eval = match &self.text {
            Some(path) => Some(
                EvalText::read(&self.model, path, self.window, self.max_bytes)
                    .map_err(input(ReportInput::Text))?,
            ),
            None => None,
        };
        let steps = variants.len() as u64 + u64::from(eval.is_some());
        let (model, calibration) = (&self.model, calibration.as_deref());
        let measure_step = |what: &str| step(steps, what);
        Report::measure(
            model,
            &variants,
            &self.setting,
            eval.as_ref(),
            calibration,
            measure_step,
        )
    }
}

/// The part of a [`ReportRequest`] an error of [`ReportError::Input`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportInput {
    /// The format list.
    FormatList,
    /// The text bits per byte are measured on.
    Text,
    /// A generation's text prompt.
    Prompt,
    /// The vocabulary an evaluation reads a text with.
    Vocabulary,
}

impl ReportInput {
    /// Its name in messages: `format list`, `text`.
    pub fn name(self) -> &'static str {
        match self {
            Self::FormatList => "format list",
            Self::Text => "text",
            Self::Prompt => "prompt",
            Self::Vocabulary => "vocabulary",
        }
    }
}

/// A measured report: header, rows and the area model they were set against.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was measured and how.
    pub header: Header,
    /// One row per variant.
    pub rows: Vec<Row>,
    /// The area model's fitted coefficients.
    pub coefficients: Coefficients,
    /// The area model against the published figures.
    pub checks: Vec<ModelCheck>,
}

impl Report {
    /// Quantizes the model at `model` with every variant and measures it: weight errors always,
    /// bits per byte on `eval` when given (with the f32 baseline). `step` is told what is being
    /// measured before each step (the baseline first, then each variant).
    pub fn measure(
        model: &Path,
        variants: &[Variant],
        setting: &Setting,
        eval: Option<&EvalText>,
        calibration: Option<&Calibration>,
        mut step: impl FnMut(&str),
    ) -> Result<Self> {
        let source = tquant_model::checkpoint_source(model)?;
        let mut baseline = None;
        if let Some(e) = eval {
            step("f32 baseline");
            let s =
                measure::bits_per_byte(&source, &e.config, Vec::new(), &e.ids, e.window, e.bytes)?;
            baseline = Some(s);
        }
        let mut measured = Vec::with_capacity(variants.len());
        for v in variants {
            step(&v.name);
            let q = measure::quantize_checkpoint(source.checkpoint(), v)?;
            let mut m = q.measured;
            if let Some(e) = eval {
                let s = measure::bits_per_byte(
                    &source, &e.config, q.tensors, &e.ids, e.window, e.bytes,
                )
                .map_err(|err| err.context(format!("evaluating {}", v.name)))?;
                m.bits_per_byte = Some(s);
            }
            measured.push(m);
        }
        let coefficients = area::calibrated();
        let checks = area::check_against_table10();
        let rows = table::build_rows(&measured, baseline, &coefficients);
        let header = Header {
            schema_version: SCHEMA_VERSION,
            model: model.display().to_string(),
            text: eval.map(|e| e.path.display().to_string()),
            window: eval.map(|e| e.window),
            max_bytes: eval.map(|e| e.max_bytes),
            scored_bytes: eval.map(|e| e.bytes),
            block: setting.block.to_string(),
            scale_dtype: setting.scale_dtype.name().to_string(),
            weights_only: eval.is_none(),
            calibration: calibration.map(tquant_model::calibration_run::describe),
            bits_per_byte_f32: baseline,
            accuracy_loss: if eval.is_some() {
                "delta_bits_per_byte"
            } else {
                "nmse"
            },
            nmse_definition:
                "sum of squared errors / sum of squared weights over every quantized tensor",
            bits_per_weight_definition:
                "(code bits x weights + scale bits) / weights over every quantized tensor",
        };
        Ok(Self {
            header,
            rows,
            coefficients,
            checks,
        })
    }

    /// Weight errors only (any safetensors model, no runner) for `recipes`.
    pub fn weights_only(
        model: &Path,
        recipes: &[crate::Recipe],
        setting: &Setting,
    ) -> Result<Self> {
        let variants = recipes
            .iter()
            .map(|r| Variant::new(r, setting.block, setting.scale_dtype))
            .collect::<Result<Vec<_>>>()?;
        Self::measure(model, &variants, setting, None, None, |_| {})
    }

    /// Bits per byte on `eval` and weight errors for `recipes`.
    pub fn with_text(
        model: &Path,
        recipes: &[crate::Recipe],
        setting: &Setting,
        eval: &EvalText,
    ) -> Result<Self> {
        let variants = recipes
            .iter()
            .map(|r| Variant::new(r, setting.block, setting.scale_dtype))
            .collect::<Result<Vec<_>>>()?;
        Self::measure(model, &variants, setting, Some(eval), None, |_| {})
    }

    /// report.json.
    pub fn json(&self) -> Result<String> {
        output::json(&self.header, &self.rows, &self.coefficients, &self.checks)
    }

    /// report.md.
    pub fn markdown(&self) -> String {
        output::markdown(&self.header, &self.rows, &self.checks)
    }

    /// The README's compact table: [`crate::table::SUMMARY_HEADER`] and a
    /// [`Row::summary_line`] per row.
    pub fn summary_table(&self) -> String {
        let mut s = format!("{}\n", crate::table::SUMMARY_HEADER);
        for r in &self.rows {
            s.push_str(&r.summary_line());
            s.push('\n');
        }
        s
    }

    /// report.csv.
    pub fn csv(&self) -> String {
        output::csv(&self.rows)
    }

    /// The accuracy-vs-area plot.
    pub fn plot(&self) -> crate::plot::Plot {
        let label = if self.header.weights_only {
            "weight NMSE"
        } else {
            "bits per byte lost (quantized - f32)"
        };
        crate::plot::pareto_plot(&self.rows, label)
    }

    /// Writes [`REPORT_FILES`] into `dir` (created if missing), each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ReportError::io(format!("creating {}", dir.display()), e))?;
        let plot = self.plot();
        output::write_atomic(&dir.join("report.json"), self.json()?.as_bytes())?;
        output::write_atomic(&dir.join("report.md"), self.markdown().as_bytes())?;
        output::write_atomic(&dir.join("report.csv"), self.csv().as_bytes())?;
        output::write_atomic(&dir.join("pareto.svg"), plot.canvas.svg().as_bytes())?;
        output::write_atomic(&dir.join("pareto.pdf"), &plot.canvas.pdf())?;
        Ok(())
    }
}

/// The model at `model` with every matrix the converter's policy quantizes quantized in memory
/// with `recipe` (no file written); a `gptq` recipe is refused (calibrate with
/// [`crate::quantize_checkpoint`]).
pub fn open_quantized(
    model: &Path,
    recipe: &crate::Recipe,
    setting: &Setting,
    opts: tquant_model::Options,
) -> Result<tquant_model::Model> {
    if recipe.gptq {
        return Err(ReportError::GptqInMemory {
            recipe: recipe.to_string(),
        });
    }
    let source = tquant_model::checkpoint_source(model)?;
    let config = Config::from_path(model)?;
    let variant = Variant::new(recipe, setting.block, setting.scale_dtype)?;
    let q = measure::quantize_checkpoint(source.checkpoint(), &variant)?;
    let mut src = tquant_model::MemorySource::over(&source);
    for (name, t) in q.tensors {
        src.insert(name, t);
    }
    Ok(tquant_model::Model::from_source(config, &src, opts)?)
}

/// Whether `name` is a report file (or one's temporary name while it is written).
pub fn is_report_file(name: &str) -> bool {
    REPORT_FILES
        .iter()
        .any(|f| name == *f || name.starts_with(&format!(".{f}.tmp")))
}

/// A missing or empty directory is fine; an earlier report is replaced only with `force`;
/// anything else in the directory is refused, named.
pub fn check_output(dir: &Path, force: bool) -> Result<()> {
    let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if !empty {
        tquant_convert::check_output(dir, force, &is_report_file)?;
    }
    Ok(())
}
