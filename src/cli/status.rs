//! `negimg status RUN_DIR`: every cell of a run (from the run's copy of its experiment
//! file) with its state: done, failed (with the reason) or pending.
use super::Globals;
use crate::experiment::{self, LoadOptions};
use crate::run::records::{Status, cell_records};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The run folder (`results/<experiment>/<run-id>`).
    pub run_dir: PathBuf,
}

pub fn run(args: StatusArgs, _g: &Globals) -> Result<()> {
    let dir = &args.run_dir;
    let copy = dir.join("experiment.toml");
    let text = std::fs::read_to_string(&copy)
        .with_context(|| format!("cannot read {}: is this a run folder?", copy.display()))?;
    // Paths in the copy are relative to the original file, named in the manifest.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json"))
            .with_context(|| format!("cannot read {}", dir.join("manifest.json").display()))?,
    )
    .with_context(|| format!("{} is malformed", dir.join("manifest.json").display()))?;
    let original = manifest["experiment_file"]
        .as_str()
        .map_or(copy.clone(), PathBuf::from);
    let exp = experiment::parse(
        &original,
        text,
        &LoadOptions {
            allow_large: true,
            download: false,
        },
    )
    .with_context(|| format!("reading the experiment of {}", dir.display()))?;
    let records = cell_records(&dir.join("cells"));
    let varying = exp.grid.varying();
    let (mut done, mut failed) = (0, 0);
    for (i, cell) in exp.cells.iter().enumerate() {
        let state = match records.iter().find(|r| r.is_of(cell)) {
            Some(r) if r.status == Status::Done => {
                done += 1;
                "done".to_string()
            }
            Some(r) => {
                failed += 1;
                format!("failed ({})", r.error)
            }
            None => "pending".to_string(),
        };
        println!("{:>5}  {:<7} {}", i + 1, state, cell.describe(&varying));
    }
    let n = exp.cells.len();
    println!(
        "{n} cells: {done} done, {failed} failed, {} pending",
        n - done - failed
    );
    Ok(())
}
