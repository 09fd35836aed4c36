//! The generation loop: models loaded once; a batch of cells -> latents -> images.
use std::path::PathBuf;

/// Local files of every model a run uses (`hf:` references are resolved before this).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSet {
    /// A diffusers-layout folder, or a single-file LDM checkpoint (`.safetensors`).
    pub pipeline: PathBuf,
    /// A VAE folder that replaces the pipeline's own.
    pub vae: Option<PathBuf>,
    pub ip_adapter_base: Option<PathBuf>,
    pub ip_adapter_plus: Option<PathBuf>,
    /// CLIPVisionModelWithProjection folder.
    pub image_encoder: PathBuf,
}

/// What became of one cell.
#[derive(Clone, Debug)]
pub enum CellOutcome {
    Image(image::RgbImage),
    /// The cell could not be made (e.g. NaN in the latents); the others go on.
    Failed(String),
}
