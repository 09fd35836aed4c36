//! `negimg export IMAGE.png --diffusers OUT.py`: a run's image as a standalone diffusers script.
use super::Globals;
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A run's image (results/<experiment>/<run>/images/<cell-id>.png): its `negimg` chunk
    /// and the run's manifest describe the cell.
    pub image: PathBuf,
    /// Write a Python script that makes the same image with diffusers + torch, without
    /// negimg (the models by reference, the input images embedded). What diffusers cannot be
    /// made to do exactly is refused by name.
    #[arg(long, value_name = "OUT.py", required = true)]
    pub diffusers: PathBuf,
    /// Write over an existing OUT.py.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ExportArgs, _g: &Globals) -> Result<()> {
    if args.diffusers.exists() && !args.force {
        bail!(
            "{} exists: pass --force to write over it",
            args.diffusers.display()
        );
    }
    let cell = crate::run::replay::read(&args.image)?;
    let script = crate::export::diffusers_script(&cell)?;
    crate::run::fsio::atomic_write(&args.diffusers, script.as_bytes())?;
    println!("{}", args.diffusers.display());
    Ok(())
}
