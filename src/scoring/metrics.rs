//! Metrics of one image, from unit-norm embeddings (CLIP or DINOv2).
//!
//! With `P` the embedding's prefix (`clip`, `dino`):
//! - `P_i_pos` / `P_i_neg`: cosine between the image and the positive / negative image
//!   (the cell's own image prompt, else the run's scoring reference).
//! - `subtraction = clip_i_pos - clip_i_neg` (CLIP only).
//! - `P_i_base`: cosine to the paired baseline image (same seed, the baseline's values on
//!   the `[scoring] baseline` axes, all other axes equal; default baseline `negative = none`).
//! - `clip_t_K`: CLIPScore against target text K (1-based), `100 * max(cos, 0)`
//!   (torchmetrics' convention); `clip_t_cos_K`: the raw cosine.
//! - `P_div`: mean `1 - cos` to the other seeds' images of the same condition; its mean over
//!   a condition is the mean pairwise `1 - cos`, the condition's diversity over seeds.
use super::stats::{condition_axes, key_of};
use crate::axis_value::values_match;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The embedding a scorer folder's metrics come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Embedder {
    Clip,
    Dino,
}

impl Embedder {
    pub fn prefix(self) -> &'static str {
        match self {
            Embedder::Clip => "clip",
            Embedder::Dino => "dino",
        }
    }
}

/// Which way a metric should move against the baseline for the negative to have worked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Away from the negative reference.
    Lower,
    /// Towards the positive reference.
    Higher,
    /// No right way (similarity to the baseline, text targets, pixel change).
    Undirected,
}

pub fn direction(metric: &str) -> Direction {
    if metric.ends_with("_i_neg") {
        Direction::Lower
    } else if metric.ends_with("_i_pos") || metric == "subtraction" {
        Direction::Higher
    } else {
        Direction::Undirected
    }
}

/// Metrics whose per-image values are shares of a condition-level quantity (diversity): their
/// values over seeds are not independent, so they get a mean but no interval or test.
pub fn is_condition_level(metric: &str) -> bool {
    metric.ends_with("_div")
}

/// Cosine of two unit vectors.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit length (as transformers' `x / x.norm(dim=-1, keepdim=True)`).
pub fn normalized(v: &[f64]) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// CLIPScore of a cosine: `100 * max(cos, 0)`.
pub fn clip_score(cos: f64) -> f64 {
    100.0 * cos.max(0.0)
}

/// The metric names of `embedder` with `targets` text targets (CLIP only), in column order.
pub fn metric_names(embedder: Embedder, targets: usize) -> Vec<String> {
    let p = embedder.prefix();
    let mut names = vec![format!("{p}_i_pos"), format!("{p}_i_neg")];
    if embedder == Embedder::Clip {
        names.push("subtraction".into());
    }
    names.push(format!("{p}_i_base"));
    if embedder == Embedder::Clip {
        for k in 1..=targets {
            names.push(format!("clip_t_{k}"));
            names.push(format!("clip_t_cos_{k}"));
        }
    }
    names.push(format!("{p}_div"));
    names
}

/// The baseline as (axis, value) pairs: `[scoring] baseline`, else `negative = none`.
pub fn baseline_spec(info: &RunInfo) -> Vec<(String, String)> {
    if info.scoring.baseline.is_empty() {
        vec![("negative".into(), "none".into())]
    } else {
        info.scoring
            .baseline
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Whether a record is a baseline cell.
pub fn is_baseline(record: &Record, spec: &[(String, String)]) -> bool {
    spec.iter()
        .all(|(axis, want)| record.field(axis).is_some_and(|v| values_match(&v, want)))
}

/// For each record, the index of its baseline among `records`: the done baseline cell with
/// the same seed and the same values on every condition axis outside the baseline's (a zip
/// is labelled by one axis, so the parameters zipped with it follow).
pub fn baselines(info: &RunInfo, records: &[Record]) -> Vec<Option<usize>> {
    let spec = baseline_spec(info);
    let others: Vec<String> = condition_axes(info)
        .into_iter()
        .filter(|a| !spec.iter().any(|(k, _)| k == a))
        .collect();
    let key = |r: &Record| (r.seed, key_of(r, &others));
    let mut base = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.status == Status::Done && is_baseline(r, &spec) {
            base.entry(key(r)).or_insert(i);
        }
    }
    records.iter().map(|r| base.get(&key(r)).copied()).collect()
}

/// The per-image metrics of every done record, in `metric_names(embedder, text_embeds.len())`
/// order (NaN where a metric is not defined for that cell).
///
/// `image_embeds` maps an image key to its unit embedding: `cell:<cell_id>` for generated
/// images and `input:<name>` for the run's input images.
pub fn compute(
    info: &RunInfo,
    records: &[Record],
    embedder: Embedder,
    image_embeds: &HashMap<String, Vec<f64>>,
    text_embeds: &[Vec<f64>],
) -> Vec<(String, Vec<f64>)> {
    let bases = baselines(info, records);
    let cell = |r: &Record| image_embeds.get(&format!("cell:{}", r.cell_id));
    let input = |own: &str, fallback: &Option<String>| -> Option<&Vec<f64>> {
        let name = if own.is_empty() {
            fallback.as_deref()?
        } else {
            own
        };
        image_embeds.get(&format!("input:{name}"))
    };
    let diversity = diversity(info, records, image_embeds);
    records
        .iter()
        .zip(&bases)
        .filter(|(r, _)| r.status == Status::Done)
        .filter_map(|(r, base)| {
            let e = cell(r)?;
            let cos_to = |other: Option<&Vec<f64>>| other.map_or(f64::NAN, |o| cosine(e, o));
            let pos = cos_to(input(&r.positive_image, &info.scoring.positive_reference));
            let neg = cos_to(input(&r.negative_image, &info.scoring.negative_reference));
            let base = cos_to(base.and_then(|b| cell(&records[b])));
            let mut values = vec![pos, neg];
            if embedder == Embedder::Clip {
                values.push(pos - neg);
            }
            values.push(base);
            if embedder == Embedder::Clip {
                for t in text_embeds {
                    let c = cosine(e, t);
                    values.push(clip_score(c));
                    values.push(c);
                }
            }
            values.push(diversity.get(&r.cell_id).copied().unwrap_or(f64::NAN));
            Some((r.cell_id.clone(), values))
        })
        .collect()
}

/// Per image: mean `1 - cos` to the other done images of its condition (NaN when alone).
fn diversity(
    info: &RunInfo,
    records: &[Record],
    image_embeds: &HashMap<String, Vec<f64>>,
) -> HashMap<String, f64> {
    let axes = condition_axes(info);
    let mut groups: HashMap<Vec<String>, Vec<(&str, &Vec<f64>)>> = HashMap::new();
    for r in records.iter().filter(|r| r.status == Status::Done) {
        if let Some(e) = image_embeds.get(&format!("cell:{}", r.cell_id)) {
            groups
                .entry(key_of(r, &axes))
                .or_default()
                .push((&r.cell_id, e));
        }
    }
    let mut out = HashMap::new();
    for members in groups.values() {
        for (i, (id, e)) in members.iter().enumerate() {
            let d: Vec<f64> = members
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, o))| 1.0 - cosine(e, o))
                .collect();
            let v = if d.is_empty() {
                f64::NAN
            } else {
                d.iter().sum::<f64>() / d.len() as f64
            };
            out.insert(id.to_string(), v);
        }
    }
    out
}
