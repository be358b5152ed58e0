//! The one error type of the converter and the checkpoint reader, and the names of the settings
//! its messages mention.
//!
//! Messages name settings by [`Setting::name`] (`layout bnb`, `nu`); a front end that spells
//! them its own way renders the error with [`ConvertError::with_flags`], which also adds the
//! advice that only makes sense there (the CLI: `--layout bnb`, `pass --force to replace it`).

use crate::schema::Layout;
use safetensors::Dtype;
use std::fmt;
use std::path::PathBuf;
use tquant_formats::{BlockSize, FormatError, ScaleDtype, ScaleRule};

/// A converter setting, as the messages of [`ConvertError`] name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// The format (or recipe) quantized with.
    Format,
    /// The Student Float degrees of freedom.
    Nu,
    /// The block size.
    Block,
    /// The dtype scales are stored in.
    ScaleDtype,
    /// How each block's scale is chosen.
    ScaleRule,
    /// The on-disk layout.
    Layout,
    /// Calibration statistics (GPTQ).
    Calibration,
    /// The globs of tensors kept unquantized.
    Exclude,
    /// The globs of tensors left out of the output.
    Drop,
    /// Replacing an existing output.
    Force,
    /// GPTQ's relative damping.
    Damp,
    /// Tokens per calibration chunk.
    CalibrationWindow,
    /// Tokens per input column a matrix needs to be calibrated.
    MinTokensPerColumn,
    /// How the embeddings and the output head are stored.
    KeepAs,
    /// Calibration on text the model writes itself.
    SelfCalibration,
    /// The calibration file holds token ids, not text.
    CalibrationIds,
    /// Where in the calibration file the calibration tokens start.
    CalibrationOffset,
    /// How much of the calibration file is used.
    CalibrationBytes,
    /// The quality preset (a recipe, calibration and storage of the embeddings and head).
    Quality,
    /// The directory of the tokenizer a GGUF file embeds.
    Tokenizer,
}

impl Setting {
    /// The plain name messages use: `format`, `nu`, `scale rule`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::Nu => "nu",
            Self::Block => "block",
            Self::ScaleDtype => "scale dtype",
            Self::ScaleRule => "scale rule",
            Self::Layout => "layout",
            Self::Calibration => "calibration",
            Self::Exclude => "exclude",
            Self::Drop => "drop",
            Self::Force => "force",
            Self::Damp => "damp",
            Self::CalibrationWindow => "calibration window",
            Self::MinTokensPerColumn => "min tokens per column",
            Self::KeepAs => "keep as",
            Self::SelfCalibration => "self calibration",
            Self::CalibrationIds => "calibration ids",
            Self::CalibrationOffset => "calibration offset",
            Self::CalibrationBytes => "calibration bytes",
            Self::Quality => "quality",
            Self::Tokenizer => "tokenizer",
        }
    }
}

/// Everything that can go wrong reading, converting or writing a checkpoint. Every variant
/// names the file and, where there is one, the tensor; errors of other layers are kept as the
/// [`std::error::Error::source`] (and quoted in the message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A file that cannot be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors header (or an index or config file) that does not describe a valid file.
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor entry of a header that is inconsistent (offsets, sizes, dtype, shape).
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A quantized tensor whose stored part is missing.
    MissingPart {
        /// The file that describes the quantized tensor.
        path: PathBuf,
        /// The quantized tensor.
        tensor: String,
        /// The part it lacks.
        part: String,
    },
    /// A stored part of a quantized tensor whose dtype or shape is not what its description
    /// says.
    PartMismatch {
        /// The file holding the part.
        path: PathBuf,
        /// The part.
        part: String,
        /// The dtype and shape the description asks for.
        expected: (Dtype, Vec<usize>),
        /// The dtype and shape stored.
        found: (Dtype, Vec<usize>),
    },
    /// A tensor read as float values (a codebook, a scale table) that is stored otherwise.
    NotFloat {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: Dtype,
    },
    /// Weights that cannot be quantized because some values are NaN or infinite.
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor (and expert).
        tensor: String,
        /// Values that are NaN or infinite.
        count: usize,
        /// Values of the tensor (or expert).
        total: usize,
    },
    /// A tensor that is invalid for what was asked of it, outside any file.
    Invalid {
        /// The tensor.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor asked for by name that the checkpoint does not have.
    NotFound {
        /// The checkpoint.
        path: PathBuf,
        /// The name asked for.
        tensor: String,
    },
    /// A checkpoint directory without model.safetensors or an index.
    NotACheckpoint {
        /// The path given.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// An output that exists and was not asked to be replaced.
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// An existing output that may not be replaced: it holds `names`, which tquant did not
    /// write (or, with no names, it is a file of its own).
    ForeignOutput {
        /// The output.
        path: PathBuf,
        /// Its entries tquant did not write.
        names: Vec<String>,
    },
    /// Stored parts the kernels cannot multiply (sizes that do not match the shape).
    Kernel {
        /// The tensor.
        tensor: String,
        /// What the kernels refused.
        #[source]
        source: tquant_kernels::KernelError,
    },
    /// A tensor the format's quantizer refused.
    Format {
        /// The tensor.
        tensor: String,
        /// What the quantizer refused.
        #[source]
        source: FormatError,
    },
    /// A setting whose value does not parse or is out of range (a format, block, scale dtype
    /// or nu).
    BadSetting {
        /// The setting.
        setting: Setting,
        /// The value given.
        value: String,
        /// Why it was refused.
        #[source]
        source: FormatError,
    },
    /// A nu for a format that is not Student Float.
    NuNotApplicable {
        /// The format.
        format: String,
    },
    /// A nu for a format whose name already fixes one (`sf4:nu=3`).
    NuAlreadyFixed {
        /// The format as written.
        format: String,
        /// Its bits per code.
        bits: u32,
    },
    /// A nu that is not a number, `fit` or `search`.
    BadNu {
        /// The value given.
        value: String,
    },
    /// q8_0 embeddings and output head asked of a layout other than tquant's.
    KeepAsLayout {
        /// The layout.
        layout: Layout,
    },
    /// A q8_0 output head with 4-bit embeddings asked of a layout other than tquant's.
    KeepAsHeadLayout {
        /// The layout.
        layout: Layout,
    },
    /// A scale rule other than absmax for a layout that fixes its own.
    ScaleRuleLayout {
        /// The rule asked for.
        rule: ScaleRule,
        /// The layout.
        layout: Layout,
    },
    /// A learned table (`learned`, or `learned_row` with `row_tables`) for a layout that stores
    /// only its own fixed table.
    LearnedLayout {
        /// The layout.
        layout: Layout,
        /// Tables per row (`learned_row`) rather than per matrix.
        row_tables: bool,
    },
    /// Settings bitsandbytes' layout cannot store; each field is set when it is one of them.
    BnbSettings {
        /// The format, when it is not nf4.
        format: Option<String>,
        /// The scale dtype, when it is not f32.
        scale_dtype: Option<ScaleDtype>,
        /// The block, when it is not one bitsandbytes has.
        block: Option<BlockSize>,
    },
    /// Settings the MXFP4 layout cannot store (it is e2m1, e8m0 scales, blocks of 32).
    Mxfp4Settings {
        /// The format.
        format: String,
        /// The scale dtype.
        scale_dtype: ScaleDtype,
        /// The block.
        block: BlockSize,
    },
    /// Settings the compressed-tensors layout (NVFP4: e2m1, e4m3 scales, blocks of 16; MXFP4:
    /// e2m1, e8m0 scales, blocks of 32) or the ModelOpt layout (NVFP4 only) cannot store.
    CtSettings {
        /// The layout.
        layout: Layout,
        /// The format.
        format: String,
        /// The scale dtype.
        scale_dtype: ScaleDtype,
        /// The block.
        block: BlockSize,
    },
    /// A tensor the compressed-tensors layout cannot store: rows not a whole number of blocks,
    /// or a fused 3-D expert tensor (compressed-tensors stores one Linear module per matrix).
    CtTensor {
        /// The file, when the tensor is in one.
        path: Option<PathBuf>,
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Elements per block of the format.
        block: usize,
    },
    /// A nu with `auto` other than `fit` or `search`.
    AutoNu {
        /// The value given.
        value: String,
    },
    /// A nu with an `auto` list that has no plain sf4 / sf3 candidate to apply it to.
    AutoNuUnused {
        /// The list.
        format: String,
    },
    /// A tensor whose rows MXFP4 cannot store (their length is not a multiple of its block).
    Mxfp4Rows {
        /// The file, when the tensor is in one.
        path: Option<PathBuf>,
        /// The tensor.
        tensor: String,
        /// Its row length.
        cols: usize,
    },
    /// A format that should be `auto` or `auto:LIST` and is not.
    NotAutoFormat {
        /// The format.
        format: String,
    },
    /// An `auto` list entry that is not a format.
    AutoCandidate {
        /// The list.
        format: String,
        /// The entry.
        candidate: String,
        /// Why it is not a format.
        #[source]
        source: FormatError,
    },
    /// An `auto` list that names a candidate twice.
    AutoDuplicate {
        /// The list.
        format: String,
        /// The candidate.
        candidate: String,
    },
    /// An `auto` list whose candidates cannot go together.
    AutoList {
        /// What is wrong with it.
        #[source]
        source: AutoListError,
    },
    /// `auto` with a layout other than tquant's (which stores a codebook per matrix).
    AutoLayout {
        /// The layout.
        layout: Layout,
    },
    /// An `auto` candidate the block and scale dtype cannot store.
    AutoCandidateStore {
        /// The candidate.
        candidate: String,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// Calibration statistics given both whole and in stages.
    CalibrationTwice,
    /// The gguf layout asked of the safetensors converter: it has its own
    /// ([`crate::gguf::convert_gguf`]), with ggml's types instead of a recipe.
    GgufLayout,
    /// A setting the gguf layout has no use for: ggml's types fix blocks of 32 with an f16
    /// scale.
    GgufFixes {
        /// The setting.
        setting: Setting,
        /// The value, when only some values do not apply (the absmax scale rule).
        value: Option<String>,
    },
    /// Source-precision embeddings and head asked with a gguf recipe that stores them as Q8_0.
    KeepAsContradicts {
        /// The gguf recipe.
        recipe: String,
    },
    /// A recipe that quantizes with GPTQ given no calibration.
    NeedsCalibration {
        /// The recipe.
        recipe: String,
    },
    /// A calibration setting that must be a number >= 0 and is not.
    NegativeSetting {
        /// The setting.
        setting: Setting,
        /// The value given.
        value: f64,
    },
    /// Calibration chunks of no tokens.
    EmptyCalibrationWindow,
    /// Calibration with a layout other than tquant's (GPTQ writes tquant's layout only).
    CalibrationLayout {
        /// The layout.
        layout: Layout,
    },
    /// Calibration statistics that do not make a `dim x dim` matrix.
    StatisticsSize {
        /// Values given.
        values: usize,
        /// Input width.
        dim: usize,
    },
    /// Calibration statistics with a NaN or infinite value.
    StatisticsNonFinite {
        /// The value.
        value: f64,
    },
    /// Calibration statistics that are not symmetric.
    StatisticsAsymmetric {
        /// Row of the first mismatch.
        row: usize,
        /// Column of the first mismatch.
        col: usize,
        /// The value at (row, col).
        value: f64,
        /// The value at (col, row).
        mirror: f64,
    },
    /// A calibration stage whose statistics could not be collected.
    Stage {
        /// The stage.
        stage: usize,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Calibration stages asked for out of order.
    StageOrder {
        /// The stage asked for.
        asked: usize,
        /// The stage that comes next.
        next: usize,
    },
    /// Worker threads that could not be started.
    Threads {
        /// The count asked for.
        threads: Option<usize>,
        /// Why.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// An output path that would replace the input checkpoint.
    OverwritesInput {
        /// The output.
        output: PathBuf,
    },
    /// An output path without a file name (`/`, `..`).
    OutputName {
        /// The output.
        path: PathBuf,
    },
    /// A drop glob that matches no tensor (a typo would keep what was meant to go).
    DropUnmatched {
        /// The glob.
        glob: String,
        /// The checkpoint.
        checkpoint: PathBuf,
    },
    /// A recipe that does not make converter options.
    Recipe {
        /// The recipe as written.
        recipe: String,
        /// Why.
        #[source]
        source: Box<ConvertError>,
    },
    /// A recipe whose format is not one.
    RecipeFormat {
        /// The recipe as written.
        recipe: String,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// A recipe that does not follow the grammar.
    RecipeSyntax {
        /// The recipe as written.
        recipe: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// What is wrong with an `auto` candidate list as a whole (also read back from a checkpoint's
/// metadata).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AutoListError {
    /// `auto` without a list where one is needed (a checkpoint records the list).
    #[error("'auto' names no candidates")]
    Unlisted,
    /// Not `auto` or `auto:LIST`.
    #[error("'{name}' is not auto:LIST")]
    NotAuto {
        /// The name.
        name: String,
    },
    /// An empty list.
    #[error("auto needs at least one candidate format")]
    Empty,
    /// Candidates of different bit widths.
    #[error("auto candidates must have the same bits per code: '{first}' has {first_bits}, '{other}' has {other_bits}")]
    MixedBits {
        /// The first candidate.
        first: String,
        /// Its bits per code.
        first_bits: u32,
        /// A candidate with other bits.
        other: String,
        /// Its bits per code.
        other_bits: u32,
    },
    /// An entry that is not a format.
    #[error("{source}")]
    Candidate {
        /// The entry.
        candidate: String,
        /// Why it is not a format.
        #[source]
        source: FormatError,
    },
}

/// How a rendering spells settings: `None` is the plain names of [`Setting::name`] without
/// front-end advice.
type Flags<'a> = Option<&'a dyn Fn(Setting) -> &'static str>;

/// A [`ConvertError`] rendered with a front end's names for the settings.
pub struct WithFlags<'a> {
    error: &'a ConvertError,
    flags: &'a dyn Fn(Setting) -> &'static str,
}

impl fmt::Debug for WithFlags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithFlags")
            .field("error", self.error)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for WithFlags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.render(f, Some(self.flags))
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, None)
    }
}

impl ConvertError {
    /// The message with settings spelled by `flags` (the CLI: `Setting::Layout` is `--layout`),
    /// with the advice that names them (`; pass --force to replace it`).
    pub fn with_flags<'a>(&'a self, flags: &'a dyn Fn(Setting) -> &'static str) -> WithFlags<'a> {
        WithFlags { error: self, flags }
    }

    /// True for a refusal of the options asked for (settings that do not parse or do not go
    /// together, an output that would replace the input), rather than of the files or weights.
    pub fn is_options(&self) -> bool {
        !(self.is_file()
            || matches!(
                self,
                Self::NonFinite { .. }
                    | Self::Invalid { .. }
                    | Self::NotFound { .. }
                    | Self::OutputExists { .. }
                    | Self::ForeignOutput { .. }
                    | Self::Kernel { .. }
                    | Self::Format { .. }
                    | Self::Mxfp4Rows { .. }
                    | Self::CtTensor { .. }
            ))
    }

    /// True for a file that cannot be read or is not a valid (quantized) checkpoint.
    pub fn is_file(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::Header { .. }
                | Self::Tensor { .. }
                | Self::NotACheckpoint { .. }
                | Self::MissingPart { .. }
                | Self::PartMismatch { .. }
                | Self::NotFloat { .. }
        )
    }

    fn render(&self, f: &mut fmt::Formatter<'_>, flags: Flags<'_>) -> fmt::Result {
        let n = |s: Setting| flags.map_or(s.name(), |flag| flag(s));
        const OPTS: &str = "invalid options: ";
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Header { path, reason } => {
                write!(f, "{}: malformed header: {reason}", path.display())
            }
            Self::Tensor {
                path,
                tensor,
                reason,
            } => write!(f, "{}: tensor '{tensor}': {reason}", path.display()),
            Self::MissingPart { path, tensor, part } => write!(
                f,
                "{}: tensor '{tensor}': quantized tensor lacks its part '{part}'",
                path.display()
            ),
            Self::PartMismatch {
                path,
                part,
                expected,
                found,
            } => write!(
                f,
                "{}: tensor '{part}': expected {} {:?}, found {} {:?}",
                path.display(),
                expected.0,
                expected.1,
                found.0,
                found.1
            ),
            Self::NotFloat { path, tensor, dtype } => write!(
                f,
                "{}: tensor '{tensor}': expected a float tensor, found {dtype}",
                path.display()
            ),
            Self::NonFinite {
                path,
                tensor,
                count,
                total,
            } => write!(
                f,
                "{}: tensor '{tensor}' has {count} NaN or infinite values (of {total}); refusing to quantize it",
                path.display()
            ),
            Self::Invalid { tensor, reason } => write!(f, "tensor '{tensor}': {reason}"),
            Self::NotFound { path, tensor } => {
                write!(f, "{}: no tensor named '{tensor}'", path.display())
            }
            Self::NotACheckpoint { path, reason } => write!(
                f,
                "{}: not a safetensors checkpoint: {reason}",
                path.display()
            ),
            Self::OutputExists { path } => {
                write!(f, "{}: output exists", path.display())?;
                if flags.is_some() {
                    write!(f, "; pass {} to replace it", n(Setting::Force))?;
                }
                Ok(())
            }
            Self::ForeignOutput { path, names } => {
                write!(f, "{}: {}; ", path.display(), foreign_list(names))?;
                if flags.is_some() {
                    write!(
                        f,
                        "{} replaces only a previous tquant output: ",
                        n(Setting::Force)
                    )?;
                }
                let them = if names.len() == 1 { "it" } else { "them" };
                write!(f, "choose another output path or remove {them}")
            }
            Self::Kernel { tensor, source } => write!(f, "tensor '{tensor}': {source}"),
            Self::Format { tensor, source } => write!(f, "tensor '{tensor}': {source}"),
            Self::BadSetting { source, .. } => write!(f, "{OPTS}{source}"),
            Self::NuNotApplicable { format } => write!(
                f,
                "{OPTS}{} applies to Student Float formats (sf4, sf3), not '{format}'",
                n(Setting::Nu)
            ),
            Self::NuAlreadyFixed { format, bits } => {
                write!(f, "{OPTS}'{format}' already fixes nu")?;
                if flags.is_some() {
                    let nu = n(Setting::Nu);
                    write!(f, "; drop {nu} or write the format as sf{bits}")?;
                }
                Ok(())
            }
            Self::BadNu { value } => write!(
                f,
                "{OPTS}{} '{value}' is not a number, 'fit' or 'search'",
                n(Setting::Nu)
            ),
            Self::KeepAsLayout { layout } => write!(
                f,
                "{OPTS}{} q8_0 needs {} tquant ({} stores the embeddings and the output head \
                 at source precision: {} source)",
                n(Setting::KeepAs),
                n(Setting::Layout),
                layout.name(),
                n(Setting::KeepAs),
            ),
            Self::KeepAsHeadLayout { layout } => write!(
                f,
                "{OPTS}{} head-q8_0 needs {} tquant ({} stores the embeddings and the output \
                 head at source precision: {} source)",
                n(Setting::KeepAs),
                n(Setting::Layout),
                layout.name(),
                n(Setting::KeepAs),
            ),
            Self::ScaleRuleLayout { rule, layout } => write!(
                f,
                "{OPTS}{} {rule} needs {} tquant ({} fixes its own scale rule)",
                n(Setting::ScaleRule),
                n(Setting::Layout),
                layout.name()
            ),
            Self::LearnedLayout { layout, row_tables } => write!(
                f,
                "{OPTS}{} {} needs {} tquant ({} stores fixed tables only)",
                n(Setting::Format),
                if *row_tables { "learned_row" } else { "learned" },
                n(Setting::Layout),
                layout.name()
            ),
            Self::BnbSettings {
                format,
                scale_dtype,
                block,
            } => {
                // Name only what is wrong, with what bitsandbytes supports in its place.
                let mut wrong = Vec::new();
                if let Some(format) = format {
                    wrong.push(format!("{} nf4 only (got {format})", n(Setting::Format)));
                }
                if let Some(d) = scale_dtype {
                    wrong.push(format!("f32 scales only (got {d})"));
                }
                if let Some(b) = block {
                    let blocks = tquant_formats::layouts::BNB_BLOCKS.map(|b| b.to_string()).join(", ");
                    wrong.push(format!("{} {blocks} only (got {b})", n(Setting::Block)));
                }
                let layout = n(Setting::Layout);
                write!(
                    f,
                    "{OPTS}{layout} bnb (bitsandbytes NF4) supports {}; use {layout} tquant for \
                     other formats",
                    wrong.join("; ")
                )
            }
            Self::Mxfp4Settings {
                format,
                scale_dtype,
                block,
            } => write!(
                f,
                "{OPTS}{} mxfp4 stores e2m1 with e8m0 scales and blocks of {}, not {format} / {scale_dtype} / block {block}",
                n(Setting::Layout),
                tquant_formats::layouts::MXFP4_BLOCK
            ),
            Self::CtSettings {
                layout,
                format,
                scale_dtype,
                block,
            } => {
                write!(
                    f,
                    "{OPTS}{} {} stores e2m1 with e4m3 scales and blocks of 16 (NVFP4)",
                    n(Setting::Layout),
                    layout.name()
                )?;
                if *layout == Layout::CompressedTensors {
                    write!(
                        f,
                        " or e8m0 scales and blocks of 32 (MXFP4), or int4_full with f32 / bf16 / \
                         f16 scales and groups of a multiple of 8 (pack-quantized INT4)"
                    )?;
                }
                write!(f, ", not {format} / {scale_dtype} / block {block}")
            }
            Self::CtTensor {
                path,
                tensor,
                shape,
                block,
            } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                if shape.len() == 3 {
                    write!(
                        f,
                        "tensor '{tensor}' {shape:?}: compressed-tensors stores one matrix per module, \
                         not a fused 3-D expert tensor"
                    )?;
                } else {
                    write!(
                        f,
                        "tensor '{tensor}' {shape:?}: compressed-tensors needs rows whose length is a \
                         multiple of {block}"
                    )?;
                }
                if flags.is_some() {
                    write!(f, " (exclude it with {})", n(Setting::Exclude))?;
                }
                Ok(())
            }
            Self::AutoNu { value } => write!(
                f,
                "{OPTS}with {} auto, {} is 'fit' or 'search' (for the sf candidates), not '{value}'; \
                 list a fixed table as sf4:nu=X",
                n(Setting::Format),
                n(Setting::Nu)
            ),
            Self::AutoNuUnused { format } => write!(
                f,
                "{OPTS}{} applies to plain sf4 / sf3 candidates, and '{format}' lists none",
                n(Setting::Nu)
            ),
            Self::Mxfp4Rows { path, tensor, cols } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(
                    f,
                    "tensor '{tensor}': MXFP4 needs rows whose length is a multiple of {}; this one has {cols}",
                    tquant_formats::layouts::MXFP4_BLOCK
                )?;
                if flags.is_some() {
                    write!(f, " (exclude it with {})", n(Setting::Exclude))?;
                }
                Ok(())
            }
            Self::NotAutoFormat { format } => {
                write!(f, "{OPTS}'{format}' is not auto or auto:LIST")
            }
            Self::AutoCandidate {
                format,
                candidate,
                source,
            } => write!(
                f,
                "{OPTS}{} {format}: candidate '{candidate}': {source}",
                n(Setting::Format)
            ),
            Self::AutoDuplicate { format, candidate } => write!(
                f,
                "{OPTS}{} {format}: '{candidate}' is listed twice",
                n(Setting::Format)
            ),
            Self::AutoList { source } => write!(f, "{OPTS}{source}"),
            Self::AutoLayout { layout } => write!(
                f,
                "{OPTS}{} auto needs {} tquant (it stores a codebook per matrix), not {}",
                n(Setting::Format),
                n(Setting::Layout),
                layout.name()
            ),
            Self::AutoCandidateStore { candidate, source } => {
                write!(f, "{OPTS}auto candidate '{candidate}': {source}")
            }
            Self::GgufLayout => write!(
                f,
                "{OPTS}{} gguf is written by the GGUF exporter (ggml types q4_0 or iq4_nl, \
                 optionally +search), not from these options",
                n(Setting::Layout)
            ),
            Self::GgufFixes { setting, value } => write!(
                f,
                "{}{} does not apply to {} gguf: ggml's types fix blocks of 32 with an f16 scale \
                 ({} q4_0 or iq4_nl, +search for the scale search)",
                n(*setting),
                value.as_ref().map_or(String::new(), |v| format!(" {v}")),
                n(Setting::Layout),
                n(Setting::Format)
            ),
            Self::KeepAsContradicts { recipe } => write!(
                f,
                "{} source contradicts {} {recipe}: drop one of them",
                n(Setting::KeepAs),
                n(Setting::Format)
            ),
            Self::NeedsCalibration { recipe } => write!(
                f,
                "recipe '{recipe}' quantizes with GPTQ and needs calibration: pass {} FILE or {} N",
                n(Setting::Calibration),
                n(Setting::SelfCalibration)
            ),
            Self::CalibrationTwice => write!(
                f,
                "{OPTS}give the calibration either whole or in stages, not both"
            ),
            Self::NegativeSetting { setting, value } => {
                write!(f, "{} must be a number >= 0, not {value}", n(*setting))
            }
            Self::EmptyCalibrationWindow => write!(
                f,
                "{} must be at least 1 token",
                n(Setting::CalibrationWindow)
            ),
            Self::CalibrationLayout { layout } => write!(
                f,
                "{OPTS}{} needs {} tquant ({} fixes its own quantizer)",
                n(Setting::Calibration),
                n(Setting::Layout),
                layout.name()
            ),
            Self::StatisticsSize { values, dim } => write!(
                f,
                "{OPTS}calibration statistics: {values} values do not make a {dim} x {dim} matrix"
            ),
            Self::StatisticsNonFinite { value } => write!(
                f,
                "{OPTS}calibration statistics: non-finite value {value} (did the model overflow on \
                 the calibration text?)"
            ),
            Self::StatisticsAsymmetric {
                row,
                col,
                value,
                mirror,
            } => write!(
                f,
                "{OPTS}calibration statistics: not symmetric at ({row}, {col}): {value} vs {mirror}"
            ),
            Self::Stage { stage, source } => write!(f, "calibration, stage {stage}: {source}"),
            Self::StageOrder { asked, next } => write!(
                f,
                "calibration stages run in order: asked for stage {asked}, next is {next}"
            ),
            Self::Threads { threads, source } => {
                write!(f, "{OPTS}cannot start {threads:?} threads: {source}")
            }
            Self::OverwritesInput { output } => write!(
                f,
                "{OPTS}output '{}' would replace the input checkpoint",
                output.display()
            ),
            Self::OutputName { path } => {
                write!(f, "{OPTS}output '{}' has no file name", path.display())
            }
            Self::DropUnmatched { glob, checkpoint } => write!(
                f,
                "{OPTS}{} '{glob}' matches no tensor of {}",
                n(Setting::Drop),
                checkpoint.display()
            ),
            Self::Recipe { recipe, source } => {
                // The recipe's own refusal, without a second "invalid options".
                let inner = match flags {
                    Some(flags) => source.with_flags(flags).to_string(),
                    None => source.to_string(),
                };
                let inner = inner.strip_prefix(OPTS).unwrap_or(&inner);
                write!(f, "{OPTS}recipe '{recipe}': {inner}")
            }
            Self::RecipeFormat { recipe, source } => {
                write!(f, "{OPTS}recipe '{recipe}': {source}")
            }
            Self::RecipeSyntax { recipe, reason } => {
                write!(f, "{OPTS}recipe '{recipe}': {reason}")
            }
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn header(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Header {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn setting(setting: Setting, value: impl Into<String>, source: FormatError) -> Self {
        Self::BadSetting {
            setting,
            value: value.into(),
            source,
        }
    }
}

fn foreign_list(names: &[String]) -> String {
    if names.is_empty() {
        return "a file not written by tquant (its outputs are directories)".into();
    }
    const SHOWN: usize = 8;
    let mut list = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    format!("holds files not written by tquant ({list})")
}
