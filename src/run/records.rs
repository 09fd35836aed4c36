//! `records.csv`: one row per image of a run.
use crate::params::{AdapterKind, NegativeMode, NoImage, SchedulerKind};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Failed,
}

/// One image: every generation parameter (images by their experiment name), its file, its timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Stable hash of the resolved parameters and model identity.
    pub cell_id: String,
    pub status: Status,
    /// Image file relative to the run folder (empty when failed).
    pub file: String,
    pub seed: u64,
    pub prompt: String,
    pub negative_prompt: String,
    pub negative: NegativeMode,
    /// `[images.NAME]` of the positive image, empty for none.
    pub positive_image: String,
    /// `[images.NAME]` of the negative image, empty for none.
    pub negative_image: String,
    pub adapter: AdapterKind,
    pub weight: f64,
    pub start: f64,
    pub end: f64,
    pub neg_weight: f64,
    pub neg_start: f64,
    pub neg_end: f64,
    pub cfg: f64,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub width: usize,
    pub height: usize,
    pub no_image: NoImage,
    /// Seconds of generation attributed to this image (batch time / batch size).
    pub seconds: f64,
    /// Why the cell failed (empty when done).
    pub error: String,
}

pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut records = Vec::new();
    for (i, row) in reader.deserialize().enumerate() {
        let record: Record =
            row.with_context(|| format!("{}: row {} is malformed", path.display(), i + 2))?;
        records.push(record);
    }
    Ok(records)
}
