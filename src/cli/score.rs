//! `negimg score RUN_DIR [--scorer REF] [--scorer-dino REF] [--aesthetic REF]`: (re)scores a finished run with
//! the current measures (CLIP, DINOv2, pixel change, statistics against the baseline)
//! without regenerating it; each scorer writes its own folder under scores/.
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
    /// DINOv2 model in Hugging Face Dinov2Model layout (e.g. hf:facebook/dinov2-base).
    /// Default: the run's scorer_dino (manifest.json), else none.
    #[arg(long)]
    pub scorer_dino: Option<String>,
    /// LAION improved aesthetic predictor head (.pth), on the CLIP scorer's ViT-L/14
    /// embedding. Default: the run's aesthetic (manifest.json), else none.
    #[arg(long)]
    pub aesthetic: Option<String>,
    /// Only score; leave grids, curves and index.html as they are.
    #[arg(long)]
    pub no_plot: bool,
}

/// A model of the run's manifest (`[models] scorer` or `scorer_dino` of the experiment): its
/// resolved path when it is still there, else its reference.
fn manifest_model(run_dir: &Path, role: &str) -> Option<String> {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    let scorer = manifest
        .get("models")?
        .as_array()?
        .iter()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some(role))?;
    let path = scorer.get("path").and_then(|p| p.as_str());
    match path {
        Some(p) if Path::new(p).exists() => Some(p.to_string()),
        _ => scorer.get("reference")?.as_str().map(String::from),
    }
}

pub fn run(args: ScoreArgs, g: &Globals) -> Result<()> {
    let (device, kind) = g.device_and_dtype()?;
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let resolve_as = |reference: String, what: &str, component| {
        crate::weights::hub::resolve_as(&reference, &cwd, component, true)
            .with_context(|| format!("{what} {reference:?}"))
    };
    let resolve = |reference: String, what: &str| {
        resolve_as(reference, what, crate::weights::hub::Component::ModelFolder)
    };
    let clip = args
        .scorer
        .or_else(|| manifest_model(&args.run_dir, "scorer"))
        .unwrap_or_else(|| DEFAULT_SCORER.to_string());
    let dino = args
        .scorer_dino
        .or_else(|| manifest_model(&args.run_dir, "scorer_dino"));
    let aesthetic = args
        .aesthetic
        .or_else(|| manifest_model(&args.run_dir, "aesthetic"));
    let models = crate::scoring::ScoreModels {
        clip: Some(resolve(clip, "scorer")?),
        dino: dino.map(|d| resolve(d, "scorer_dino")).transpose()?,
        aesthetic: aesthetic
            .map(|a| resolve_as(a, "aesthetic", crate::weights::hub::Component::File))
            .transpose()?,
    };
    for id in crate::scoring::score_all(&args.run_dir, &models, device, kind)? {
        println!(
            "scores: {}",
            crate::scoring::scorer_dir(&args.run_dir, &id).display()
        );
    }
    if !args.no_plot {
        crate::report::plot_run(&args.run_dir)?;
        println!("report: {}", args.run_dir.join("index.html").display());
    }
    Ok(())
}
