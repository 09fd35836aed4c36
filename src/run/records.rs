//! `records.csv`: one row per image of a run.
use crate::experiment::CellSpec;
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

impl Record {
    /// The row of a cell; `file` and `error` as the outcome gives them.
    pub fn new(
        cell_id: &str,
        cell: &CellSpec,
        status: Status,
        file: &str,
        seconds: f64,
        error: &str,
    ) -> Record {
        let pos = cell.positive_branch();
        let neg = cell.negative_branch();
        Record {
            cell_id: cell_id.to_string(),
            status,
            file: file.to_string(),
            seed: cell.seed,
            prompt: cell.prompt.clone(),
            negative_prompt: cell.negative_prompt.clone(),
            negative: cell.negative_mode(),
            positive_image: cell.positive_image.clone().unwrap_or_default(),
            negative_image: cell.negative_image.clone().unwrap_or_default(),
            adapter: cell.adapter,
            weight: pos.weight,
            start: pos.start,
            end: pos.end,
            neg_weight: neg.weight,
            neg_start: neg.start,
            neg_end: neg.end,
            cfg: cell.cfg,
            steps: cell.steps,
            scheduler: cell.scheduler,
            width: cell.width,
            height: cell.height,
            no_image: cell.no_image,
            seconds,
            error: error.to_string(),
        }
    }
}

impl Record {
    /// Whether this record is of `cell` (the same experiment-level values, whatever the
    /// outcome): how a run's records are matched to an edited or re-read grid.
    pub fn is_of(&self, cell: &CellSpec) -> bool {
        let outcome_blanked = Record {
            cell_id: String::new(),
            status: Status::Done,
            file: String::new(),
            seconds: 0.0,
            error: String::new(),
            ..self.clone()
        };
        outcome_blanked == Record::new("", cell, Status::Done, "", 0.0, "")
    }
}

/// Every record in a run's `cells/` folder (one per finished cell, of every shard).
pub fn cell_records(cells: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(cells) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

/// Writes records.csv atomically.
pub fn write_records(path: &Path, records: &[Record]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        w.serialize(r)
            .with_context(|| format!("cannot write a row of {}", path.display()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    super::fsio::atomic_write(path, &bytes)
}
