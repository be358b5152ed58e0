//! `tquant verify`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("`tquant verify` is not available in this build yet")
}
