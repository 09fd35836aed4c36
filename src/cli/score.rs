//! `negimg score`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {}

pub fn run(_args: ScoreArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg score` is not implemented yet")
}
