//! `run.json`: what the report and the scorer need to know about a run, written by `run`.
pub use crate::experiment::outputs::{Axis, PlotsSpec, ScoringSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
}
