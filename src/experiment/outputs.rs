//! What an experiment asks of its outputs: the axes as labelled in records.csv, the scoring
//! and the figures. Written into run.json by the runner, read by the scorer and the report.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One grid axis: a `Record` field name (`weight`, `negative`, `negative_image`, `seed`...)
/// and its values in the experiment's order, formatted as in records.csv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlotsSpec {
    pub rows: Option<String>,
    pub cols: Option<String>,
    pub pages: Option<String>,
    /// Numeric axis on the x of curves.
    pub curve_x: Option<String>,
    /// Axes whose combinations make one line each on curves (default: the other non-seed axes).
    pub series: Vec<String>,
    /// What the grids show of each cell. Old run.json files have none.
    #[serde(default, skip_serializing_if = "Show::is_image")]
    pub show: Show,
    /// Grid cells as filmstrips of their x̂₀ traces; unset: on when the run has traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filmstrip: Option<bool>,
    /// The map `show = "overlay"` lays over the images. Old run.json files have none.
    #[serde(default, skip_serializing_if = "Overlay::is_change")]
    pub overlay: Overlay,
}

/// `[plots] show`: a cell's image, its change map against the baseline, the map laid over
/// the image (README, "Change maps"), its negative attention map (README, "Attention
/// maps"), or a scorer's patch-token change map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Show {
    #[default]
    Image,
    Change,
    Overlay,
    #[serde(rename = "negative_attention")]
    NegativeAttention,
    /// The CLIP / DINOv2 scorer's patch-token change map (README, "Change maps").
    #[serde(rename = "change_clip")]
    ChangeClip,
    #[serde(rename = "change_dino")]
    ChangeDino,
}

impl Show {
    pub const NAMES: &'static str =
        "image, change, overlay, negative_attention, change_clip, change_dino";

    pub fn is_image(&self) -> bool {
        *self == Show::Image
    }

    pub fn parse(s: &str) -> Option<Show> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// `[plots] overlay`: the map that `show = "overlay"` lays over each image: the change map
/// against the baseline (default), the negative attention map, or a scorer's patch-token
/// change map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlay {
    #[default]
    Change,
    #[serde(rename = "negative_attention")]
    NegativeAttention,
    #[serde(rename = "change_clip")]
    ChangeClip,
    #[serde(rename = "change_dino")]
    ChangeDino,
}

impl Overlay {
    pub const NAMES: &'static str = "change, negative_attention, change_clip, change_dino";

    pub fn is_change(&self) -> bool {
        *self == Overlay::Change
    }

    pub fn parse(s: &str) -> Option<Overlay> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// `[maps]`: what a run records besides images (README, "Attention maps").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MapsSpec {
    /// Attention maps per cell (`maps/<cell-id>/attention_*.npy`); off by default.
    #[serde(default)]
    pub attention: bool,
    /// The steps the attention maps cover (`[maps] steps`); all when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<crate::steps::StepSet>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoringSpec {
    /// Texts for CLIP-T.
    pub targets: Vec<String>,
    /// `[images.NAME]` compared by clip_i_pos when a cell has no positive image of its own.
    pub positive_reference: Option<String>,
    /// `[images.NAME]` compared by clip_i_neg when a cell has no negative image of its own.
    pub negative_reference: Option<String>,
    /// The baseline cells every condition is paired with (axis -> value, formatted as in
    /// records.csv); empty: `negative = none`. Old run.json files have none.
    #[serde(default)]
    pub baseline: BTreeMap<String, String>,
    /// `[scoring] region`: a binary mask (the file, resolved) for the change maps' region
    /// shares. Old run.json files have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<std::path::PathBuf>,
}

/// One `[subjects.NAME]`: its images by `[images]` name, the captions the removal rate
/// compares, and an optional region mask (a file; recorded, not applied).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub positive: String,
    pub negative: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
}
