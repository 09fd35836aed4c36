//! `records.csv`: one row per image of a run.
use crate::experiment::CellSpec;
use crate::params::{
    self, AdapterKind, BlockWeights, IpScaling, Method, NegOff, NegativeMode, NoImage,
    SchedulerKind, StepSet, Window,
};
use crate::sampling::methods;
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
    /// Columns added after the first runs: absent in their records.csv, read as the defaults.
    #[serde(default)]
    pub method: Method,
    #[serde(default = "one")]
    pub neg_embed_scale: f64,
    /// The negative guidance scale in effect (`cfg` unless set); empty in old runs.
    #[serde(default)]
    pub neg_cfg: Option<f64>,
    #[serde(default)]
    pub window: Window,
    #[serde(default)]
    pub blocks: BlockWeights,
    /// The negative branch's block weights in effect (`blocks` unless set).
    #[serde(default)]
    pub neg_blocks: BlockWeights,
    #[serde(default)]
    pub ip_scaling: IpScaling,
    #[serde(default)]
    pub negtome: bool,
    #[serde(default = "negtome_alpha")]
    pub negtome_alpha: f64,
    #[serde(default = "negtome_threshold")]
    pub negtome_threshold: f64,
    #[serde(default = "negtome_t_min")]
    pub negtome_t_min: f64,
    #[serde(default = "negtome_t_max")]
    pub negtome_t_max: f64,
    /// The parameters of the cell's method that belong to it alone, in effect:
    /// `key=value; key=value` (empty for methods without any). Left out of the cell's
    /// JSON when empty, so the ids of the cells made before it keep their digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method_params: String,
    /// The `[subjects.NAME]` of the cell; the column exists only in runs with subjects (so
    /// the rows, and the record ids made from them, of other runs are unchanged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    /// Step sets in effect (empty: the branch follows its window), and the negative
    /// branch's off state; the columns exist only in runs that use them (other runs keep
    /// their rows and record ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_at: Option<StepSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neg_steps_at: Option<StepSet>,
    #[serde(default, skip_serializing_if = "NegOff::is_zero")]
    pub neg_off: NegOff,
    /// The steps whose x̂₀ is saved under `traces/<image id>/step-NNN.png`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<StepSet>,
    /// SDXL's micro-conditioning as set (`auto`: the image's size); the columns exist only
    /// in runs that set one (other runs keep their rows and record ids).
    #[serde(default = "auto", skip_serializing_if = "is_auto")]
    pub original_size: String,
    #[serde(default = "zero_pair", skip_serializing_if = "is_zero_pair")]
    pub crops_coords_top_left: String,
    #[serde(default = "auto", skip_serializing_if = "is_auto")]
    pub target_size: String,
    /// The rows other than the cond row's (`auto`: the cond row's value); the columns exist
    /// only in runs that set one.
    #[serde(default = "auto", skip_serializing_if = "is_auto")]
    pub negative_original_size: String,
    #[serde(default = "auto", skip_serializing_if = "is_auto")]
    pub negative_crops_coords_top_left: String,
    #[serde(default = "auto", skip_serializing_if = "is_auto")]
    pub negative_target_size: String,
    /// Seconds of generation attributed to this image (batch time / batch size).
    pub seconds: f64,
    /// Why the cell failed (empty when done).
    pub error: String,
}

fn one() -> f64 {
    1.0
}
fn negtome_alpha() -> f64 {
    params::NEGTOME_ALPHA
}
fn negtome_threshold() -> f64 {
    params::NEGTOME_THRESHOLD
}
fn negtome_t_min() -> f64 {
    params::NEGTOME_T_MIN
}
fn negtome_t_max() -> f64 {
    params::NEGTOME_T_MAX
}
fn auto() -> String {
    "auto".to_string()
}
fn is_auto(s: &str) -> bool {
    s == "auto"
}
fn zero_pair() -> String {
    params::MicroPair::default().to_string()
}
fn is_zero_pair(s: &str) -> bool {
    *s == zero_pair()
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
    /// A field formatted as in records.csv (`weight` -> "0.5", `negative` -> "image"), by
    /// its column name; `None` for a name that is not a column.
    pub fn field(&self, name: &str) -> Option<String> {
        Some(match name {
            "cell_id" => self.cell_id.clone(),
            "status" => csv_value(&self.status),
            "file" => self.file.clone(),
            "seed" => self.seed.to_string(),
            "prompt" => self.prompt.clone(),
            "negative_prompt" => self.negative_prompt.clone(),
            "negative" => csv_value(&self.negative),
            "positive_image" => self.positive_image.clone(),
            "negative_image" => self.negative_image.clone(),
            "adapter" => csv_value(&self.adapter),
            "weight" => csv_value(&self.weight),
            "start" => csv_value(&self.start),
            "end" => csv_value(&self.end),
            "neg_weight" => csv_value(&self.neg_weight),
            "neg_start" => csv_value(&self.neg_start),
            "neg_end" => csv_value(&self.neg_end),
            "cfg" => csv_value(&self.cfg),
            "steps" => self.steps.to_string(),
            "scheduler" => csv_value(&self.scheduler),
            "width" => self.width.to_string(),
            "height" => self.height.to_string(),
            "no_image" => csv_value(&self.no_image),
            "method" => csv_value(&self.method),
            "neg_embed_scale" => csv_value(&self.neg_embed_scale),
            "neg_cfg" => self.neg_cfg.as_ref().map(csv_value).unwrap_or_default(),
            "window" => csv_value(&self.window),
            "blocks" => self.blocks.to_string(),
            "neg_blocks" => self.neg_blocks.to_string(),
            "ip_scaling" => csv_value(&self.ip_scaling),
            "negtome" => self.negtome.to_string(),
            "negtome_alpha" => csv_value(&self.negtome_alpha),
            "negtome_threshold" => csv_value(&self.negtome_threshold),
            "negtome_t_min" => csv_value(&self.negtome_t_min),
            "negtome_t_max" => csv_value(&self.negtome_t_max),
            "method_params" => self.method_params.clone(),
            "subject" => self.subject.clone(),
            "steps_at" => self
                .steps_at
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            "neg_steps_at" => (self.neg_steps_at.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default(),
            "neg_off" => csv_value(&self.neg_off),
            "trace" => (self.trace.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default(),
            "original_size" => self.original_size.clone(),
            "crops_coords_top_left" => self.crops_coords_top_left.clone(),
            "target_size" => self.target_size.clone(),
            "negative_original_size" => self.negative_original_size.clone(),
            "negative_crops_coords_top_left" => self.negative_crops_coords_top_left.clone(),
            "negative_target_size" => self.negative_target_size.clone(),
            "seconds" => csv_value(&self.seconds),
            "error" => self.error.clone(),
            key if methods::param(key).is_some() => self.method_param(key).unwrap_or_default(),
            _ => return None,
        })
    }

    /// The value of method parameter `key` as written in `method_params`; `None` when the
    /// cell's method does not have it.
    fn method_param(&self, key: &str) -> Option<String> {
        self.method_params
            .split("; ")
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }

    /// The value of an axis; a zipped axis (`weight, neg_weight`) gives its parts' values
    /// joined (`0.5, 0.5`).
    pub fn axis_value(&self, name: &str) -> Option<String> {
        name.split(super::info::ZIP_SEPARATOR)
            .map(|part| self.field(part))
            .collect::<Option<Vec<String>>>()
            .map(|v| v.join(super::info::ZIP_SEPARATOR))
    }

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
            method: cell.method,
            neg_embed_scale: cell.neg_embed_scale,
            neg_cfg: Some(cell.neg_cfg.unwrap_or(cell.cfg)),
            window: cell.window,
            blocks: cell.blocks.clone(),
            neg_blocks: cell.neg_blocks().clone(),
            ip_scaling: cell.ip_scaling,
            negtome: cell.negtome,
            negtome_alpha: cell.negtome_alpha,
            negtome_threshold: cell.negtome_threshold,
            negtome_t_min: cell.negtome_t_min,
            negtome_t_max: cell.negtome_t_max,
            method_params: methods::params_text(
                cell.method,
                |k| cell.method_param(k),
                |x| csv_value(&x),
                ("=", "; "),
            )
            .unwrap_or_default(),
            subject: cell.subject.clone().unwrap_or_default(),
            steps_at: cell.steps_at.clone(),
            neg_steps_at: cell.neg_steps_at().cloned(),
            neg_off: cell.neg_off,
            trace: cell.trace.clone(),
            original_size: micro_text(cell.original_size),
            crops_coords_top_left: cell.crops_coords_top_left.to_string(),
            target_size: micro_text(cell.target_size),
            negative_original_size: micro_text(cell.negative_original_size),
            negative_crops_coords_top_left: micro_text(cell.negative_crops_coords_top_left),
            negative_target_size: micro_text(cell.negative_target_size),
            seconds,
            error: error.to_string(),
        }
    }
}

/// A micro-conditioning value as records.csv writes it: `auto` where it follows its
/// default (the image's size; for a `negative_*` value the cond row's).
fn micro_text(size: Option<params::MicroPair>) -> String {
    size.map_or_else(auto, |p| p.to_string())
}

/// A value as serde writes it into records.csv (numbers as JSON writes them: 1.0, 0.5).
fn csv_value<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
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

/// The columns of records.csv, in order: [`Record`]'s fields, `method_params` always (a
/// record's JSON leaves it out when empty).
pub const COLUMNS: [&str; 37] = [
    "cell_id",
    "status",
    "file",
    "seed",
    "prompt",
    "negative_prompt",
    "negative",
    "positive_image",
    "negative_image",
    "adapter",
    "weight",
    "start",
    "end",
    "neg_weight",
    "neg_start",
    "neg_end",
    "cfg",
    "steps",
    "scheduler",
    "width",
    "height",
    "no_image",
    "method",
    "neg_embed_scale",
    "neg_cfg",
    "window",
    "blocks",
    "neg_blocks",
    "ip_scaling",
    "negtome",
    "negtome_alpha",
    "negtome_threshold",
    "negtome_t_min",
    "negtome_t_max",
    "method_params",
    "seconds",
    "error",
];

/// SDXL's micro-conditioning columns, after the step-set ones in a run that sets one.
const MICRO_COLUMNS: [&str; 3] = ["original_size", "crops_coords_top_left", "target_size"];

/// The rows other than the cond row's, after those in a run that sets one.
const NEGATIVE_MICRO_COLUMNS: [&str; 3] = [
    "negative_original_size",
    "negative_crops_coords_top_left",
    "negative_target_size",
];

/// Writes records.csv atomically: [`COLUMNS`], `subject` after `method_params` in a run
/// with subjects, and `steps_at`, `neg_steps_at`, `neg_off`, `trace` after it in a run with
/// step sets, `neg_off = "no_image"` or traces, then [`MICRO_COLUMNS`] in a run that sets one
/// and [`NEGATIVE_MICRO_COLUMNS`] in a run that sets one of them (other runs keep their
/// columns).
pub fn write_records(path: &Path, records: &[Record]) -> Result<()> {
    let mut columns = COLUMNS.to_vec();
    let mut at = columns
        .iter()
        .position(|&c| c == "method_params")
        .unwrap_or(0);
    if records.iter().any(|r| !r.subject.is_empty()) {
        at += 1;
        columns.insert(at, "subject");
    }
    let when = |r: &Record| {
        r.steps_at.is_some()
            || r.neg_steps_at.is_some()
            || !r.neg_off.is_zero()
            || r.trace.is_some()
    };
    if records.iter().any(when) {
        for (k, c) in ["steps_at", "neg_steps_at", "neg_off", "trace"]
            .into_iter()
            .enumerate()
        {
            columns.insert(at + 1 + k, c);
        }
        at += 4;
    }
    let micro = |r: &Record| {
        !(is_auto(&r.original_size)
            && is_zero_pair(&r.crops_coords_top_left)
            && is_auto(&r.target_size))
    };
    let negative_micro = |r: &Record| {
        !(is_auto(&r.negative_original_size)
            && is_auto(&r.negative_crops_coords_top_left)
            && is_auto(&r.negative_target_size))
    };
    for (set, group) in [
        (records.iter().any(micro), MICRO_COLUMNS),
        (records.iter().any(negative_micro), NEGATIVE_MICRO_COLUMNS),
    ] {
        if set {
            for (k, c) in group.into_iter().enumerate() {
                columns.insert(at + 1 + k, c);
            }
            at += group.len();
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let row_error = || format!("cannot write a row of {}", path.display());
    w.write_record(&columns).with_context(row_error)?;
    for r in records {
        let fields: Vec<String> = columns
            .iter()
            .map(|c| r.field(c).expect("every column is a field"))
            .collect();
        w.write_record(&fields).with_context(row_error)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    super::fsio::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_reads_back_through_field_as_written() {
        let cell = CellSpec {
            prompt: "a house".into(),
            negative_image: Some("lawn".into()),
            ..Default::default()
        };
        let record = Record::new("abc", &cell, Status::Done, "images/abc.png", 0.25, "");
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(&record).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let mut rows = csv::Reader::from_reader(text.as_bytes());
        let header = rows.headers().unwrap().clone();
        let row = rows.records().next().unwrap().unwrap();
        for (column, value) in header.iter().zip(row.iter()) {
            assert_eq!(record.field(column).as_deref(), Some(value), "{column}");
        }
        assert_eq!(record.field("wieght"), None);
        assert_eq!(
            record.axis_value("weight, negative_image").unwrap(),
            "1.0, lawn"
        );
    }
}
