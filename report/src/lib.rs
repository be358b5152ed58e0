//! tquant-report: quantize a model in memory with each [`Recipe`], measure the weight error and
//! the bits per byte each costs, and set them against the MAC area of the format (Table 10 of
//! Dotzel et al. where published, tquant's area model everywhere); plus the one-call
//! [`quantize_checkpoint`] (convert with optional calibration).
//!
//! ```no_run
//! use tquant_report::{Recipe, Report, Setting};
//! let recipes: Vec<Recipe> = ["nf4", "sf4", "int4"].iter().map(|r| r.parse().unwrap()).collect();
//! let setting = Setting::default();
//! let report = Report::weights_only("examples/tiny-lite".as_ref(), &recipes, &setting)?;
//! println!("{}", report.markdown());
//! # Ok::<(), tquant_report::ReportError>(())
//! ```

#![warn(missing_docs)]

pub mod canvas;
pub mod conversion;
pub mod evaluation;
pub mod measure;
pub mod messages;
pub mod output;
pub mod pipeline;
pub mod plot;
pub mod report;
pub mod streaming;
pub mod table;
pub mod text_input;
pub mod verification;

pub use conversion::{CalibrationRequest, ConvertRequest, Converted};
pub use evaluation::EvalSummary;
pub use measure::Variant;
pub use output::{write_atomic, Header};
pub use pipeline::{quantize_checkpoint, CalibrationOptions, CalibrationSource, QuantizeOptions};
pub use report::{open_quantized, EvalText, Report, ReportInput, ReportRequest, Setting};
pub use report::{REPORT_FILES, SCHEMA_VERSION};
pub use table::{Chosen, Measured, NuSummary, Row};
pub use tquant_convert::{Recipe, RecipeFormat};
pub use verification::verify_checkpoints;

use tquant_convert::ConvertError;
use tquant_model::ModelError;
use tquant_text::TextError;

/// Errors of the report crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The converter or a checkpoint failed.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The model failed (loading, running, calibrating).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tokenizer or text failed.
    #[error(transparent)]
    Text(#[from] TextError),
    /// A format list that names no format.
    #[error("the list names no format")]
    EmptyFormatList,
    /// A format list that names a format twice.
    #[error("the list names '{name}' twice")]
    DuplicateFormat {
        /// The format.
        name: String,
    },
    /// A calibrated (`gptq`) recipe in a format list: calibrated rows come with calibration.
    #[error("'{name}': calibrated rows are added for every format when calibration is given")]
    CalibratedInList {
        /// The recipe as written.
        name: String,
    },
    /// A `gptq` recipe where a model is quantized in memory, without calibration.
    #[error("recipe '{recipe}' quantizes with GPTQ: convert with calibration instead")]
    GptqInMemory {
        /// The recipe.
        recipe: String,
    },
    /// A checkpoint with a quantized tensor where the original is needed.
    #[error("{}: '{tensor}' is already quantized; the report needs the original checkpoint", path.display())]
    AlreadyQuantized {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// The quantized tensor.
        tensor: String,
    },
    /// A checkpoint of which the converter's policy quantizes nothing.
    #[error("{}: the converter's policy quantizes no tensor of this checkpoint", path.display())]
    NothingToQuantize {
        /// The checkpoint.
        path: std::path::PathBuf,
    },
    /// A quantized tensor whose codebook is not one.
    #[error("tensor '{tensor}': codebook: {source}")]
    Codebook {
        /// The tensor.
        tensor: String,
        /// Why the codebook was refused.
        #[source]
        source: tquant_formats::FormatError,
    },
    /// A text that is not UTF-8 before its end.
    #[error("{}: a tokenizer reads UTF-8 text, and byte {byte} is not UTF-8", path.display())]
    NotUtf8 {
        /// The text file.
        path: std::path::PathBuf,
        /// The offset of the first byte that is not UTF-8.
        byte: usize,
    },
    /// An output path without a file name.
    #[error("{}: not a file path", path.display())]
    NotAFilePath {
        /// The path.
        path: std::path::PathBuf,
    },
    /// An I/O error, with what was being done (`reading /x`, `writing /y`).
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: std::io::Error,
    },
    /// An error with what was being done; the error is its source (and quoted in the message).
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: Box<ReportError>,
    },
    /// A calibration file with nothing left after the offset.
    #[error("{}: nothing left after offset {offset} ({len} {unit} in the file)", path.display())]
    EmptyWindow {
        /// The calibration file.
        path: std::path::PathBuf,
        /// The offset asked for.
        offset: usize,
        /// The file's length, in `unit`.
        len: usize,
        /// `bytes` or `ids`.
        unit: &'static str,
    },
    /// Collecting the calibration for the float model failed; the error is its source.
    #[error("loading {} for calibration", model.display())]
    Calibration {
        /// The float model.
        model: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<ReportError>,
    },
    /// The GGUF converter failed.
    #[error(transparent)]
    Gguf(#[from] tquant_convert::gguf::GgufError),
    /// Scoring a model on a text or token ids failed.
    #[error(transparent)]
    Scoring(ModelError),
    /// A part of a report's request that could not be used; the error is its source.
    #[error("{}", input.name())]
    Input {
        /// The part.
        input: report::ReportInput,
        /// Why.
        #[source]
        source: Box<ReportError>,
    },
    /// Two checkpoints that are not an original and a quantized one made from it.
    #[error("{}", verification::pairing_message(*pairing, original, quantized, ""))]
    Pairing {
        /// How they stand.
        pairing: verification::Pairing,
        /// The checkpoint given as the original.
        original: std::path::PathBuf,
        /// The checkpoint given as the quantized one.
        quantized: std::path::PathBuf,
    },
    /// A chat asked of a model whose tokenizer has no chat template (or that has no
    /// tokenizer.json at all: a byte vocabulary).
    #[error(
        "{}",
        if *tokenizer {
            format!("chat: {} has no chat_template in tokenizer_config.json", model.display())
        } else {
            format!(
                "chat needs a tokenizer.json with a chat_template in its tokenizer_config.json \
                 beside {}",
                model.display()
            )
        }
    )]
    NoChatTemplate {
        /// The model directory.
        model: std::path::PathBuf,
        /// Whether it has a tokenizer.json (without a chat template).
        tokenizer: bool,
    },
    /// A text prompt without a vocabulary to read it.
    #[error("a text prompt needs the model's vocabulary")]
    NoVocabulary,
    /// A setting given for a layout it does not apply to.
    #[error("{} is for layout {}", setting.name(), layout.name())]
    OnlyForLayout {
        /// The setting.
        setting: tquant_convert::Setting,
        /// The only layout it applies to.
        layout: tquant_convert::Layout,
    },
    /// report.json could not be written or read.
    #[error("report.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl ReportError {
    /// This error with what was being done in front of it.
    pub fn context(self, context: impl Into<String>) -> Self {
        Self::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    pub(crate) fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            err,
        }
    }
}

/// The report crate's result.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;
