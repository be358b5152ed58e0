//! `tquant run`.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    anyhow::bail!("`tquant run` is not available in this build yet")
}
