//! `--calibrate` and its settings (GPTQ; docs/calibration.md), shared by convert and report.

use std::path::PathBuf;
use tquant_convert::calibration::{CalibrationSettings, DEFAULT_MIN_TOKENS_PER_COLUMN};
use tquant_formats::gptq::DEFAULT_DAMP;
use tquant_model::calibrate::RouterWeighting;
use tquant_report::CalibrationRequest;

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// GPTQ with the float model's inputs on FILE (text, or token ids with --calibrate-ids).
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,
    /// GPTQ on N tokens the float model writes itself (temperature 1, --calibrate-window long).
    #[arg(long, value_name = "N", conflicts_with = "calibrate")]
    pub calibrate_self: Option<usize>,
    /// Seed of the text --calibrate-self generates.
    #[arg(long, default_value_t = 0, requires = "calibrate_self")]
    pub calibrate_seed: u64,
    /// FILE holds little-endian u32 token ids (any vocabulary); offsets and lengths count ids.
    #[arg(long, requires = "calibrate")]
    pub calibrate_ids: bool,
    /// Skip the first N bytes of FILE (e.g. the part an evaluation scores).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "calibrate_self"
    )]
    pub calibrate_offset: usize,
    /// Use at most N bytes of FILE after the offset (default: the rest).
    #[arg(long, value_name = "N", conflicts_with = "calibrate_self")]
    pub calibrate_bytes: Option<usize>,
    /// Tokens per calibration chunk, each from an empty cache (and per --calibrate-self sequence).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub calibrate_window: usize,
    /// GPTQ damping, relative to the mean diagonal of each input second moment.
    #[arg(long, default_value_t = DEFAULT_DAMP)]
    pub damp: f64,
    /// GPTQ act-order: quantize the columns with the largest inputs first.
    #[arg(long)]
    pub act_order: bool,
    /// How routed experts count tokens: `routed` (by routing weight squared) or `uniform`.
    #[arg(long, default_value = "routed")]
    pub router_weighting: RouterWeighting,
    /// Calibrate a matrix only if this many tokens per input column reached it (else plain).
    #[arg(long, default_value_t = DEFAULT_MIN_TOKENS_PER_COLUMN, value_name = "X")]
    pub min_tokens_per_column: f64,
}

impl CalibrateArgs {
    /// The library's calibration request these options make.
    pub fn request(&self) -> CalibrationRequest {
        CalibrationRequest {
            file: self.calibrate.clone(),
            ids: self.calibrate_ids,
            offset: self.calibrate_offset,
            len: self.calibrate_bytes,
            self_tokens: self.calibrate_self,
            seed: self.calibrate_seed,
            window: self.calibrate_window,
            settings: CalibrationSettings {
                damp: self.damp,
                act_order: self.act_order,
                min_tokens_per_column: self.min_tokens_per_column,
            },
            weighting: self.router_weighting,
        }
    }
}
