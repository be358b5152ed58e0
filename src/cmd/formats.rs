//! `tquant formats`: the catalog with values in code order.

use anyhow::Result;
use tquant_formats::Format;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of {name, bits, values, source}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let formats = Format::all();
    if args.json {
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
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for f in &formats {
        let values: Vec<String> = f
            .codebook()
            .values()
            .iter()
            .map(|v| format!("{v}"))
            .collect();
        println!(
            "{:<10} {} bits  [{}]",
            f.name(),
            f.bits(),
            values.join(", ")
        );
    }
    Ok(())
}
