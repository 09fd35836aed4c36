//! The experiment file as serde reads it. Unknown keys are refused everywhere, so a typo fails
//! with the key and its line. `[defaults]` and `[grid]` are only type-checked here (tables);
//! they are read again from the spanned document by `grid.rs`, to report values with lines.
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRaw {
    #[serde(default)]
    pub experiment: ExperimentRaw,
    pub models: ModelsRaw,
    #[serde(default)]
    pub images: BTreeMap<String, Spanned<ImageRaw>>,
    /// Type-checked here, read by `grid.rs`.
    #[serde(default, rename = "defaults")]
    pub _defaults: Option<toml::Table>,
    #[serde(default, rename = "grid")]
    pub _grid: Option<toml::Table>,
    #[serde(default)]
    pub scoring: ScoringRaw,
    #[serde(default)]
    pub plots: PlotsRaw,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRaw {
    /// Folder name under results/ (default: the file name without .toml).
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsRaw {
    pub pipeline: Spanned<String>,
    pub vae: Option<Spanned<String>>,
    #[serde(default)]
    pub ip_adapter: IpAdapterRaw,
    pub image_encoder: Spanned<String>,
    pub scorer: Option<Spanned<String>>,
    /// A DINOv2 model (transformers' Dinov2Model layout), the second embedding.
    pub scorer_dino: Option<Spanned<String>>,
    /// Create random models when `dir` is missing (`negimg models init-random`).
    pub init_random: Option<Spanned<InitRandomRaw>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpAdapterRaw {
    pub base: Option<Spanned<String>>,
    pub plus: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRandomRaw {
    /// `tiny` or `sd15`.
    pub preset: String,
    /// The folder to create, relative to the experiment file.
    pub dir: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRaw {
    /// An image file, relative to the experiment file (spanned: errors name its line).
    pub path: Option<Spanned<String>>,
    /// Or: made text-to-image by the experiment's pipeline.
    pub generate: Option<GenerateRaw>,
    /// Or: derived from another input image (`derived.rs`).
    pub derive: Option<Spanned<DeriveRaw>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeriveRaw {
    /// The source image; none: a black 224x224 image.
    pub from: Option<Spanned<String>>,
    pub noise: Spanned<String>,
    /// A number, or a list or range string for a family.
    pub strength: Option<Spanned<toml::Value>>,
    pub blur: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRaw {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default)]
    pub seed: u64,
    pub steps: Option<u64>,
    pub cfg: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringRaw {
    #[serde(default)]
    pub targets: Vec<String>,
    pub positive_reference: Option<Spanned<String>>,
    pub negative_reference: Option<Spanned<String>>,
    /// The baseline cells: axis = value (default `negative = "none"`).
    pub baseline: Option<Spanned<toml::Table>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotsRaw {
    pub rows: Option<Spanned<String>>,
    pub cols: Option<Spanned<String>>,
    pub pages: Option<Spanned<String>>,
    pub curve_x: Option<Spanned<String>>,
    #[serde(default)]
    pub series: Vec<Spanned<String>>,
}
