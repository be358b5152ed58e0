//! `tquant logits`: a model's logits for a list of token ids, as JSON.

use super::model_args::ModelArgs;
use anyhow::Result;
use tquant_model::Logits;

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
    let model = args.model.open()?;
    let mut cache = model.new_cache();
    let which = if args.last { Logits::Last } else { Logits::All };
    let logits = model.forward(&args.tokens, &mut cache, which)?;
    let rows: Vec<&[f32]> = logits.chunks(model.config().vocab_size).collect();
    super::emit(&format!("{}\n", serde_json::json!({ "logits": rows })))
}
