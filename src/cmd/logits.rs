//! `tquant logits`: a model's logits for a list of token ids, as JSON.

use super::model_args::ModelArgs;
use anyhow::Result;
use tquant_model::{Logits, Mode};
use tquant_report::evaluation::logits_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub tokens: Vec<u32>,
    /// Only the last position's logits.
    #[arg(long)]
    pub last: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.model.open_with(Mode::Exact)?;
    let which = if args.last { Logits::Last } else { Logits::All };
    let logits = logits_json(&model, &args.tokens, which)?;
    super::emit(&format!("{logits}\n"))
}
