//! `negimg score RUN_DIR [--scorer REF]`: (re)scores a finished run without regenerating it.
use super::Globals;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// torchmetrics' CLIPScore model, the default scorer.
pub const DEFAULT_SCORER: &str = "hf:openai/clip-vit-large-patch14";

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The run folder (results/<experiment>/<run-id>).
    pub run_dir: PathBuf,
    /// CLIP model in Hugging Face CLIPModel layout: a local folder or hf:org/repo[@rev].
    /// Default: the run's scorer (manifest.json), else hf:openai/clip-vit-large-patch14.
    #[arg(long)]
    pub scorer: Option<String>,
    /// Only score; leave grids, curves and index.html as they are.
    #[arg(long)]
    pub no_plot: bool,
}

/// The scorer of the run's manifest (`[models] scorer` of the experiment): its resolved path
/// when it is still there, else its reference.
fn manifest_scorer(run_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    let scorer = manifest
        .get("models")?
        .as_array()?
        .iter()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("scorer"))?;
    let path = scorer.get("path").and_then(|p| p.as_str());
    match path {
        Some(p) if Path::new(p).exists() => Some(p.to_string()),
        _ => scorer.get("reference")?.as_str().map(String::from),
    }
}

pub fn run(args: ScoreArgs, g: &Globals) -> Result<()> {
    let (device, kind) = g.device_and_dtype()?;
    let reference = args
        .scorer
        .or_else(|| manifest_scorer(&args.run_dir))
        .unwrap_or_else(|| DEFAULT_SCORER.to_string());
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let component = crate::weights::hub::Component::ModelFolder;
    let scorer = crate::weights::hub::resolve_as(&reference, &cwd, component, true)
        .with_context(|| format!("scorer {reference:?}"))?;
    crate::scoring::score_run(&args.run_dir, &scorer, device, kind)?;
    let id = crate::scoring::scorer_id(&scorer)?;
    println!(
        "scores: {}",
        crate::scoring::scorer_dir(&args.run_dir, &id).display()
    );
    if !args.no_plot {
        crate::report::plot_run(&args.run_dir)?;
        println!("report: {}", args.run_dir.join("index.html").display());
    }
    Ok(())
}
