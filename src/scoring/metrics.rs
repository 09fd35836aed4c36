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
//! - `neg_present` (CLIP, cells of a subject with a `negative_caption`): CLIP zero-shot
//!   presence of the negative's concept, 1 when the image's cosine to `negative_caption` is
//!   above its cosine to the neutral caption (the subject's `positive_caption`, else
//!   [`NEUTRAL_CAPTION`]), else 0; its mean over a condition is the presence rate, and
//!   `1 - rate` the removal rate.
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
    if metric.ends_with("_i_neg") || metric == NEG_PRESENT {
        Direction::Lower
    } else if metric.ends_with("_i_pos") || metric == "subtraction" {
        Direction::Higher
    } else {
        Direction::Undirected
    }
}

/// The removal measure's column.
pub const NEG_PRESENT: &str = "neg_present";
/// The caption `negative_caption` is compared with when a subject has no `positive_caption`.
pub const NEUTRAL_CAPTION: &str = "a photo";

/// 0/1 measures, whose paired test is McNemar's.
pub fn is_binary(metric: &str) -> bool {
    metric == NEG_PRESENT
}

/// The (negative, neutral) captions of a subject, or `None` without a `negative_caption`.
pub fn removal_captions(subject: &crate::run::info::Subject) -> Option<(&str, &str)> {
    let negative = subject.negative_caption.as_deref()?;
    let neutral = subject
        .positive_caption
        .as_deref()
        .unwrap_or(NEUTRAL_CAPTION);
    Some((negative, neutral))
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
    if embedder == Embedder::Clip {
        names.push(NEG_PRESENT.into());
    }
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
/// images and `input:<name>` for the run's input images; `captions` the subjects' captions
/// (CLIP) by text.
pub fn compute(
    info: &RunInfo,
    records: &[Record],
    embedder: Embedder,
    image_embeds: &HashMap<String, Vec<f64>>,
    text_embeds: &[Vec<f64>],
    captions: &HashMap<String, Vec<f64>>,
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
            if embedder == Embedder::Clip {
                values.push(neg_present(info, r, e, captions));
            }
            Some((r.cell_id.clone(), values))
        })
        .collect()
}

/// 1 when the image is closer to its subject's negative caption than to the neutral one, 0
/// when not, NaN without a subject or caption.
fn neg_present(
    info: &RunInfo,
    r: &Record,
    image: &[f64],
    captions: &HashMap<String, Vec<f64>>,
) -> f64 {
    let Some((negative, neutral)) = info.subjects.get(&r.subject).and_then(removal_captions) else {
        return f64::NAN;
    };
    match (captions.get(negative), captions.get(neutral)) {
        (Some(n), Some(z)) => f64::from(u8::from(cosine(image, n) > cosine(image, z))),
        _ => f64::NAN,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::CellSpec;
    use crate::run::info::Subject;

    #[test]
    fn removal_neg_present_compares_the_negative_caption_with_the_neutral_one() {
        let subject = |positive_caption: Option<&str>| Subject {
            positive: "p".into(),
            negative: "n".into(),
            positive_caption: positive_caption.map(String::from),
            negative_caption: Some("a lawn".into()),
            mask: None,
        };
        let mut info = RunInfo {
            experiment: "t".into(),
            run_id: "r".into(),
            axes: Vec::new(),
            plots: Default::default(),
            scoring: Default::default(),
            images: Default::default(),
            captions: Default::default(),
            subjects: Default::default(),
        };
        info.subjects.insert("a".into(), subject(Some("a house")));
        info.subjects.insert("b".into(), subject(None));
        let record = |id: &str, subject: &str| {
            let cell = CellSpec {
                subject: Some(subject.into()),
                ..Default::default()
            };
            let mut r = Record::new(id, &cell, Status::Done, "", 0.0, "");
            r.subject = subject.to_string();
            r
        };
        let records = [
            record("x", "a"),
            record("y", "a"),
            record("z", "b"),
            record("w", ""),
        ];
        // Unit vectors: x leans to "a lawn", y to "a house"; z is compared with "a photo".
        let images = HashMap::from([
            ("cell:x".to_string(), vec![0.8, 0.6, 0.0]),
            ("cell:y".to_string(), vec![0.6, 0.8, 0.0]),
            ("cell:z".to_string(), vec![0.6, 0.0, 0.8]),
            ("cell:w".to_string(), vec![1.0, 0.0, 0.0]),
        ]);
        let captions = HashMap::from([
            ("a lawn".to_string(), vec![1.0, 0.0, 0.0]),
            ("a house".to_string(), vec![0.0, 1.0, 0.0]),
            (NEUTRAL_CAPTION.to_string(), vec![0.0, 0.0, 1.0]),
        ]);
        let rows = compute(&info, &records, Embedder::Clip, &images, &[], &captions);
        let column = metric_names(Embedder::Clip, 0)
            .iter()
            .position(|m| m == NEG_PRESENT)
            .unwrap();
        let present: Vec<f64> = rows.iter().map(|(_, v)| v[column]).collect();
        assert_eq!(&present[..3], &[1.0, 0.0, 0.0]);
        // No subject: not defined.
        assert!(present[3].is_nan());
        assert_eq!(direction(NEG_PRESENT), Direction::Lower);
        assert!(is_binary(NEG_PRESENT) && !is_binary("clip_i_neg"));
    }
}
