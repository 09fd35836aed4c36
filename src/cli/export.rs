//! `negimg export IMAGE.png --diffusers OUT.py`: a run's image as a standalone diffusers script.
use super::Globals;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// A run's image (results/<experiment>/<run>/images/<cell-id>.png): its `negimg` chunk
    /// and the run's manifest describe the cell.
    pub image: PathBuf,
    /// Write a Python script that makes the same image with diffusers + torch, without
    /// negimg (the models by reference, the input images embedded; for a single-file
    /// pipeline, the configs negimg maps it with in OUT.configs/ beside it). What diffusers
    /// cannot be made to do exactly is refused by name.
    #[arg(long, value_name = "OUT.py", required = true)]
    pub diffusers: PathBuf,
    /// Write over an existing OUT.py (and OUT.configs/).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ExportArgs, _g: &Globals) -> Result<()> {
    let cell = crate::run::replay::read(&args.image)?;
    let configs = crate::export::write_diffusers_export(&cell, &args.diffusers, args.force)?;
    if let Some(configs) = configs {
        println!("{}", configs.display());
    }
    println!("{}", args.diffusers.display());
    Ok(())
}
