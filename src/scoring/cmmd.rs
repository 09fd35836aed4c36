//! CMMD (Jayasumana et al. 2024, google-research `cmmd/distance.py`): the squared maximum mean
//! discrepancy between two sets of unit CLIP image embeddings with a Gaussian RBF kernel,
//! σ = 10, times 1000, in its minimum-variance (biased) form:
//! `1000 · (mean K(x, x') + mean K(y, y') − 2 mean K(x, y))`, `K(a, b) = exp(−‖a − b‖² / (2σ²))`
//! with `‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b` (as the reference computes it), means over all pairs
//! including a point with itself.
//!
//! negimg compares each condition's images with its baseline images (the paired cells, see
//! `metrics::baselines`) and tests the difference with a permutation test: the two sets'
//! labels shuffled [`PERMUTATIONS`] times (seeded), `p = (k + 1) / (B + 1)` with k the shuffles
//! whose CMMD reaches the observed one.
use super::metrics;
use super::stats::{SplitMix64, condition_axes, fnv1a, key_of};
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The reference's kernel bandwidth.
pub const SIGMA: f64 = 10.0;
/// The reference's scale, for readable numbers.
pub const SCALE: f64 = 1000.0;
/// Label shuffles of the permutation test.
pub const PERMUTATIONS: usize = 1000;
/// The seed every permutation stream is derived from.
const PERMUTATION_SEED: u64 = 0x6e65_6769_6d67_0003;

/// The Gaussian kernel matrix of `points` (every pair), distances as the reference forms them.
fn kernel(points: &[&[f64]]) -> Vec<Vec<f64>> {
    let gamma = 1.0 / (2.0 * SIGMA * SIGMA);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let sq: Vec<f64> = points.iter().map(|p| dot(p, p)).collect();
    points
        .iter()
        .enumerate()
        .map(|(i, a)| {
            points
                .iter()
                .enumerate()
                .map(|(j, b)| (-gamma * (-2.0 * dot(a, b) + sq[i] + sq[j])).exp())
                .collect()
        })
        .collect()
}

/// CMMD of the split `in_x` (true: the point is in x) of a kernel matrix.
fn split_mmd(k: &[Vec<f64>], in_x: &[bool]) -> f64 {
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    for (i, row) in k.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            match (in_x[i], in_x[j]) {
                (true, true) => xx += v,
                (false, false) => yy += v,
                (true, false) => xy += v,
                (false, true) => {}
            }
        }
    }
    let nx = in_x.iter().filter(|b| **b).count() as f64;
    let ny = in_x.len() as f64 - nx;
    SCALE * (xx / (nx * nx) + yy / (ny * ny) - 2.0 * xy / (nx * ny))
}

/// CMMD between the sets `x` and `y` (non-empty).
pub fn cmmd(x: &[&[f64]], y: &[&[f64]]) -> f64 {
    let all: Vec<&[f64]> = x.iter().chain(y).copied().collect();
    let in_x: Vec<bool> = (0..all.len()).map(|i| i < x.len()).collect();
    split_mmd(&kernel(&all), &in_x)
}

/// CMMD and its permutation p-value; `label` seeds the shuffles.
pub fn cmmd_test(x: &[&[f64]], y: &[&[f64]], label: &str) -> (f64, f64) {
    let all: Vec<&[f64]> = x.iter().chain(y).copied().collect();
    let k = kernel(&all);
    let mut in_x: Vec<bool> = (0..all.len()).map(|i| i < x.len()).collect();
    let observed = split_mmd(&k, &in_x);
    // Ties within rounding count as reaching the observed value.
    let threshold = observed - 1e-9 * observed.abs().max(1e-12);
    let mut rng = SplitMix64::new(PERMUTATION_SEED ^ fnv1a(label));
    let mut hits = 0;
    for _ in 0..PERMUTATIONS {
        // Fisher-Yates shuffle of the labels.
        for i in (1..in_x.len()).rev() {
            in_x.swap(i, rng.below(i + 1));
        }
        if split_mmd(&k, &in_x) >= threshold {
            hits += 1;
        }
    }
    (observed, (hits + 1) as f64 / (PERMUTATIONS + 1) as f64)
}

/// One condition against its baseline images.
#[derive(Clone, Debug, PartialEq)]
pub struct ConditionCmmd {
    /// Values of the condition axes.
    pub key: Vec<String>,
    pub n: usize,
    pub n_baseline: usize,
    pub cmmd: f64,
    pub p: f64,
}

/// One condition's own embeddings and the indices of its baseline records.
type Group<'a> = (Vec<&'a [f64]>, Vec<usize>);

/// CMMD of every non-baseline condition with paired baseline images, from unit image
/// embeddings keyed `cell:<cell_id>`.
pub fn by_condition(
    info: &RunInfo,
    records: &[Record],
    embeds: &HashMap<String, Vec<f64>>,
) -> Vec<ConditionCmmd> {
    let axes = condition_axes(info);
    let spec = metrics::baseline_spec(info);
    let bases = metrics::baselines(info, records);
    let embed = |r: &Record| embeds.get(&format!("cell:{}", r.cell_id));
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    let mut order = Vec::new();
    for (r, base) in records.iter().zip(&bases) {
        if r.status != Status::Done || metrics::is_baseline(r, &spec) {
            continue;
        }
        let (Some(e), Some(b)) = (embed(r), base) else {
            continue;
        };
        let key = key_of(r, &axes);
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Default::default()
        });
        entry.0.push(e);
        if !entry.1.contains(b) {
            entry.1.push(*b);
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let (x, base) = &groups[&key];
            let y: Vec<&[f64]> = base
                .iter()
                .filter_map(|&b| embed(&records[b]).map(Vec::as_slice))
                .collect();
            if y.is_empty() {
                return None;
            }
            let (cmmd, p) = cmmd_test(x, &y, &key.join("\u{1f}"));
            Some(ConditionCmmd {
                n: x.len(),
                n_baseline: y.len(),
                key,
                cmmd,
                p,
            })
        })
        .collect()
}

/// `cmmd.csv`: the condition axes, n, n_baseline, cmmd, p.
pub fn write_csv(path: &Path, axes: &[String], rows: &[ConditionCmmd]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = axes.to_vec();
    header.extend(["n", "n_baseline", "cmmd", "cmmd_p"].map(String::from));
    w.write_record(&header)?;
    for r in rows {
        let mut rec = r.key.clone();
        rec.extend([
            r.n.to_string(),
            r.n_baseline.to_string(),
            r.cmmd.to_string(),
            r.p.to_string(),
        ]);
        w.write_record(&rec)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    crate::run::fsio::atomic_write(path, &bytes)
}

/// Reads `cmmd.csv` (absent: none) as condition key -> (cmmd, p).
pub fn read_csv(path: &Path, axes: usize) -> Result<HashMap<Vec<String>, (f64, f64)>> {
    let mut out = HashMap::new();
    if !path.is_file() {
        return Ok(out);
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (i, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}: row {} is malformed", path.display(), i + 2))?;
        let num = |j: usize| -> Result<f64> {
            row.get(j)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{}: row {}: column {j}", path.display(), i + 2))
        };
        let key: Vec<String> = row.iter().take(axes).map(String::from).collect();
        out.insert(key, (num(axes + 2)?, num(axes + 3)?));
    }
    Ok(out)
}
