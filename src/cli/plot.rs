//! `negimg plot`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct PlotArgs {}

pub fn run(_args: PlotArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg plot` is not implemented yet")
}
