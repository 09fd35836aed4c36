//! `negimg bench`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg bench` is not implemented yet")
}
