//! `negimg models`.
use super::Globals;
use anyhow::{Result, bail};

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {}

pub fn run(_args: ModelsArgs, _g: &Globals) -> Result<()> {
    bail!("`negimg models` is not implemented yet")
}
