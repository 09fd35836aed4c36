//! `run.json`: what the report and the scorer need to know about a run, written by `run`.
use super::records::Record;
pub use crate::experiment::outputs::{Axis, Overlay, PlotsSpec, ScoringSpec, Show, Subject};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;

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
    /// `[subjects]` by name (the `subject` axis' values); empty without subjects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subjects: BTreeMap<String, Subject>,
}

/// Separates the parts of a zipped axis, in its name and in its values.
pub const ZIP_SEPARATOR: &str = ", ";

impl RunInfo {
    /// The run.json of run `run_id` of `exp`.
    pub fn of(exp: &crate::experiment::Experiment, run_id: &str) -> RunInfo {
        RunInfo {
            experiment: exp.name.clone(),
            run_id: run_id.to_string(),
            axes: exp.axes(),
            plots: exp.plots.clone(),
            scoring: exp.scoring.clone(),
            images: exp
                .images
                .keys()
                .map(|n| (n.clone(), format!("inputs/{n}.png")))
                .collect(),
            captions: super::derived::captions(exp),
            subjects: exp.subjects.iter().cloned().collect(),
        }
    }

    /// The run's axes with zipped ones merged: two varying axes whose values go one-to-one in
    /// the records (an experiment's zip, e.g. weight and neg_weight swept together) become one
    /// axis `weight, neg_weight` with values `0.5, 0.5`..., so that figures do not cross them.
    pub fn merged_axes(&self, records: &[Record]) -> Vec<Axis> {
        let one_to_one = |a: &Axis, b: &Axis| {
            let mut ab: HashMap<String, String> = HashMap::new();
            let mut ba: HashMap<String, String> = HashMap::new();
            !records.is_empty()
                && records.iter().all(|r| {
                    let (Some(x), Some(y)) = (r.field(&a.name), r.field(&b.name)) else {
                        return false;
                    };
                    ab.entry(x.clone()).or_insert_with(|| y.clone()) == &y
                        && ba.entry(y).or_insert(x.clone()) == &x
                })
        };
        let mut merged: Vec<Vec<&Axis>> = Vec::new();
        for axis in &self.axes {
            let zip_with = merged.iter_mut().find(|group| {
                let first = group[0];
                axis.name != "seed"
                    && first.name != "seed"
                    && axis.values.len() > 1
                    && first.values.len() == axis.values.len()
                    && one_to_one(first, axis)
            });
            match zip_with {
                Some(group) => group.push(axis),
                None => merged.push(vec![axis]),
            }
        }
        merged
            .into_iter()
            .map(|group| Axis {
                name: group
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(ZIP_SEPARATOR),
                values: (0..group[0].values.len())
                    .map(|i| {
                        group
                            .iter()
                            .map(|a| a.values[i].as_str())
                            .collect::<Vec<_>>()
                            .join(ZIP_SEPARATOR)
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The scheduler configuration the run's pipeline folder holds (as the pipeline reads it),
/// while that folder is still where `manifest.json` says; `None` otherwise.
pub fn run_schedule(run_dir: &std::path::Path) -> Option<crate::sampling::SchedulerConfig> {
    let text = std::fs::read_to_string(run_dir.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    let path = manifest
        .get("models")?
        .as_array()?
        .iter()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("pipeline"))?
        .get("path")?
        .as_str()?;
    let source = crate::pipeline::source::open(std::path::Path::new(path), false).ok()?;
    source.scheduler_config().ok()
}
