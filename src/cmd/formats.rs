//! `tquant formats`: the catalog with values in code order.

use super::convert::emit;
use anyhow::Result;
use std::fmt::Write as _;
use tquant_formats::Format;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of {name, bits, values, source}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let formats = Format::all();
    let mut out = String::new();
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
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return emit(&out);
    }
    let values: Vec<String> = formats
        .iter()
        .map(|f| {
            let v: Vec<String> = f
                .codebook()
                .values()
                .iter()
                .map(|v| format!("{v}"))
                .collect();
            format!("[{}]", v.join(", "))
        })
        .collect();
    let width = values.iter().map(|v| v.chars().count()).max().unwrap_or(0);
    writeln!(
        out,
        "{:<10} {:<4} {:<width$}  source",
        "name", "bits", "values in code order"
    )?;
    for (f, v) in formats.iter().zip(&values) {
        writeln!(
            out,
            "{:<10} {:<4} {v:<width$}  {}",
            f.name(),
            f.bits(),
            f.source()
        )?;
    }
    emit(&out)
}
