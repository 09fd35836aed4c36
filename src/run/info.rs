//! `run.json`: what the report and the scorer need to know about a run, written by `run`.
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
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoringSpec {
    /// Texts for CLIP-T.
    pub targets: Vec<String>,
    /// `[images.NAME]` compared by clip_i_pos when a cell has no positive image of its own.
    pub positive_reference: Option<String>,
    /// `[images.NAME]` compared by clip_i_neg when a cell has no negative image of its own.
    pub negative_reference: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub experiment: String,
    pub run_id: String,
    /// Axes of the grid (seed included when it varies), in the experiment's order.
    pub axes: Vec<Axis>,
    pub plots: PlotsSpec,
    pub scoring: ScoringSpec,
    /// Input images by name, as files relative to the run folder (`inputs/NAME.png`).
    pub images: BTreeMap<String, String>,
    /// Captions of derived images (`fade 0.25 of house`) by name, for labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub captions: BTreeMap<String, String>,
}
