//! `tquant formats`: the catalog with values in code order.

use anyhow::Result;
use tquant_formats::{catalog_table, Format};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of {name, bits, values, source}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let formats = Format::listed();
    if !args.json {
        return super::emit(&catalog_table(&formats));
    }
    let list: Vec<_> = formats
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "bits": f.bits(),
                "values": f.codebook().values(),
                "source": f.source(),
            })
        })
        .collect();
    super::emit(&format!("{}\n", serde_json::to_string_pretty(&list)?))
}
