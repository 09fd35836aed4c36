//! `negimg run`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct RunArgs {}

pub fn run(_args: RunArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg run` is not implemented yet")
}
