//! `negimg generate`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {}

pub fn run(_args: GenerateArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg generate` is not implemented yet")
}
