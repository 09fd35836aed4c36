//! `negimg plan`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {}

pub fn run(_args: PlanArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg plan` is not implemented yet")
}
