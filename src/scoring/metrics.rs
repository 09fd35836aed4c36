//! CLIP metrics of one image, from unit-norm embeddings.
//!
//! - `clip_i_pos` / `clip_i_neg`: cosine between the image and the positive / negative image
//!   (the cell's own image prompt, else the run's scoring reference).
//! - `subtraction = clip_i_pos - clip_i_neg`.
//! - `clip_i_base`: cosine to the same seed's `negative = none` image with otherwise equal
//!   parameters (present when the run has such cells).
//! - `clip_t_K`: CLIPScore against target text K (1-based), `100 * max(cos, 0)`
//!   (torchmetrics' convention); `clip_t_cos_K`: the raw cosine.
use crate::params::NegativeMode;
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use std::collections::HashMap;

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

/// The metric names for `targets` text targets, in column order.
pub fn metric_names(targets: usize) -> Vec<String> {
    let mut names: Vec<String> = ["clip_i_pos", "clip_i_neg", "subtraction", "clip_i_base"]
        .into_iter()
        .map(String::from)
        .collect();
    for k in 1..=targets {
        names.push(format!("clip_t_{k}"));
        names.push(format!("clip_t_cos_{k}"));
    }
    names
}

/// Parameters that must agree between a cell and its `negative = none` baseline. The
/// negative text and image do not matter to a `none` cell; the negative branch weights do
/// (the "no image" tokens are weighted too), so they are matched when such a cell exists.
fn base_key(r: &Record, with_negative_branch: bool) -> String {
    let mut key = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        r.seed,
        r.prompt,
        r.positive_image,
        r.adapter,
        r.weight,
        r.start,
        r.end,
        r.cfg,
        r.steps,
        r.scheduler,
        r.width,
        r.height,
        r.no_image
    );
    if with_negative_branch {
        key.push_str(&format!("|{}|{}|{}", r.neg_weight, r.neg_start, r.neg_end));
    }
    key
}

/// For each record, the index of its `negative = none` baseline among `records`, if any.
pub fn baselines(records: &[Record]) -> Vec<Option<usize>> {
    let mut strict = HashMap::new();
    let mut loose = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.negative == NegativeMode::None && r.status == Status::Done {
            strict.entry(base_key(r, true)).or_insert(i);
            loose.entry(base_key(r, false)).or_insert(i);
        }
    }
    records
        .iter()
        .map(|r| {
            strict
                .get(&base_key(r, true))
                .or_else(|| loose.get(&base_key(r, false)))
                .copied()
        })
        .collect()
}

/// The metrics of every done record, in `metric_names(text_embeds.len())` order (NaN where
/// a metric is not defined for that cell).
///
/// `image_embeds` maps an image key to its unit embedding: `cell:<cell_id>` for generated
/// images and `input:<name>` for the run's input images.
pub fn compute(
    info: &RunInfo,
    records: &[Record],
    image_embeds: &HashMap<String, Vec<f64>>,
    text_embeds: &[Vec<f64>],
) -> Vec<(String, Vec<f64>)> {
    let bases = baselines(records);
    let input = |own: &str, fallback: &Option<String>| -> Option<&Vec<f64>> {
        let name = if own.is_empty() {
            fallback.as_deref()?
        } else {
            own
        };
        image_embeds.get(&format!("input:{name}"))
    };
    records
        .iter()
        .zip(&bases)
        .filter(|(r, _)| r.status == Status::Done)
        .filter_map(|(r, base)| {
            let e = image_embeds.get(&format!("cell:{}", r.cell_id))?;
            let cos_to = |other: Option<&Vec<f64>>| other.map_or(f64::NAN, |o| cosine(e, o));
            let pos = cos_to(input(&r.positive_image, &info.scoring.positive_reference));
            let neg = cos_to(input(&r.negative_image, &info.scoring.negative_reference));
            let base = cos_to(
                base.and_then(|b| image_embeds.get(&format!("cell:{}", records[b].cell_id))),
            );
            let mut values = vec![pos, neg, pos - neg, base];
            for t in text_embeds {
                let c = cosine(e, t);
                values.push(clip_score(c));
                values.push(c);
            }
            Some((r.cell_id.clone(), values))
        })
        .collect()
}
