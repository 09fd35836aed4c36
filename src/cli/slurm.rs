//! `negimg slurm`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct SlurmArgs {}

pub fn run(_args: SlurmArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg slurm` is not implemented yet")
}
