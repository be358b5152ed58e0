//! `tquant formats`: the catalog with values in code order.

use anyhow::Result;
use tquant_formats::{catalog_json, catalog_table, Format};

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
    let json = serde_json::to_string_pretty(&catalog_json(&formats))?;
    super::emit(&format!("{json}\n"))
}
