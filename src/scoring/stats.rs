//! Statistics per condition: mean, standard deviation and a 95% bootstrap confidence
//! interval over seeds; paired differences between negative modes on the same seed.
//!
//! The bootstrap is deterministic: every (condition, metric) draws from its own SplitMix64
//! stream seeded from [`BOOTSTRAP_SEED`] and the condition's label, so adding a condition to
//! an experiment leaves the intervals of the others unchanged.
use crate::run::info::RunInfo;
use crate::run::records::{Record, Status};
use std::collections::{BTreeMap, HashMap};

/// Resamples per interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// The fixed seed every resampling stream is derived from.
pub const BOOTSTRAP_SEED: u64 = 0x6e65_6769_6d67_0001;
/// Confidence level of the intervals.
pub const CONFIDENCE: f64 = 0.95;

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-studied 64-bit generator.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (multiply-high; the bias is below 2^-40 for the n of a run).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// FNV-1a, to derive a stream seed from a label.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// n, mean, sample standard deviation and bootstrap interval of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); NaN for n < 2.
    pub std: f64,
    pub ci_lo: f64,
    pub ci_hi: f64,
}

impl Estimate {
    /// Estimates from `values` (NaNs are missing values and skipped); `label` seeds the bootstrap.
    pub fn of(values: &[f64], label: &str) -> Estimate {
        let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        let n = v.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / n as f64
        };
        let std = if n < 2 {
            f64::NAN
        } else {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        let (ci_lo, ci_hi) = bootstrap_ci(&v, label);
        Estimate {
            n,
            mean,
            std,
            ci_lo,
            ci_hi,
        }
    }
}

/// Percentile bootstrap interval of the mean: resample the values with replacement
/// [`BOOTSTRAP_RESAMPLES`] times, take the 2.5% and 97.5% quantiles of the resampled means
/// (linear interpolation between order statistics). NaN when fewer than 2 values.
pub fn bootstrap_ci(values: &[f64], label: &str) -> (f64, f64) {
    let n = values.len();
    if n < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED ^ fnv1a(label));
    let mut means: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - CONFIDENCE) / 2.0;
    (quantile(&means, alpha), quantile(&means, 1.0 - alpha))
}

/// Quantile of sorted values, linear interpolation (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The condition axes of a run: every axis but the seed.
pub fn condition_axes(info: &RunInfo) -> Vec<String> {
    info.axes
        .iter()
        .filter(|a| a.name != "seed")
        .map(|a| a.name.clone())
        .collect()
}

/// Values of `axes` for one record.
pub fn key_of(record: &Record, axes: &[String]) -> Vec<String> {
    axes.iter()
        .map(|a| record.field(a).unwrap_or_default())
        .collect()
}

/// Sort key that puts axis values in the experiment's order (unknown values last, by text).
fn order_of(info: &RunInfo, axes: &[String], key: &[String]) -> Vec<(usize, String)> {
    axes.iter()
        .zip(key)
        .map(|(axis, value)| {
            let index = info
                .axes
                .iter()
                .find(|a| &a.name == axis)
                .and_then(|a| a.values.iter().position(|v| v == value))
                .unwrap_or(usize::MAX);
            (index, value.clone())
        })
        .collect()
}

/// Per-image metric values of one scorer: `values[cell_id][metric index]` (NaN: not defined).
pub struct ScoreTable {
    pub metrics: Vec<String>,
    pub values: HashMap<String, Vec<f64>>,
}

#[derive(Clone, Debug)]
pub struct SummaryRow {
    /// Values of the condition axes.
    pub key: Vec<String>,
    /// Images scored (done cells with scores).
    pub n: usize,
    /// Cells of this condition that failed to generate.
    pub n_failed: usize,
    /// One estimate per metric, in `Summary::metrics` order.
    pub estimates: Vec<Estimate>,
}

/// Differences `b - a` between two negative modes on the same seed, all else equal.
#[derive(Clone, Debug)]
pub struct PairedRow {
    /// Values of the condition axes other than `negative`.
    pub key: Vec<String>,
    pub metric: String,
    pub a: String,
    pub b: String,
    pub estimate: Estimate,
    /// Fraction of the seeds where `b > a`.
    pub b_greater: f64,
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub axes: Vec<String>,
    pub metrics: Vec<String>,
    pub rows: Vec<SummaryRow>,
    /// Axes of `PairedRow::key` (the condition axes without `negative`).
    pub paired_axes: Vec<String>,
    pub paired: Vec<PairedRow>,
}

/// Groups in the experiment's order: ordered key -> (condition values, members).
type Groups<T> = BTreeMap<Vec<(usize, String)>, (Vec<String>, T)>;

/// Groups the records by condition and estimates every metric.
pub fn summarize(info: &RunInfo, records: &[Record], scores: &ScoreTable) -> Summary {
    let axes = condition_axes(info);
    let mut groups: Groups<Vec<&Record>> = BTreeMap::new();
    for r in records {
        let key = key_of(r, &axes);
        groups
            .entry(order_of(info, &axes, &key))
            .or_insert_with(|| (key, Vec::new()))
            .1
            .push(r);
    }
    let rows = groups
        .into_values()
        .map(|(key, members)| {
            let scored: Vec<&Vec<f64>> = members
                .iter()
                .filter(|r| r.status == Status::Done)
                .filter_map(|r| scores.values.get(&r.cell_id))
                .collect();
            let label = key.join("\u{1f}");
            let estimates = scores
                .metrics
                .iter()
                .enumerate()
                .map(|(m, metric)| {
                    let v: Vec<f64> = scored.iter().map(|row| row[m]).collect();
                    Estimate::of(&v, &format!("{label}\u{1e}{metric}"))
                })
                .collect();
            SummaryRow {
                n: scored.len(),
                n_failed: members
                    .iter()
                    .filter(|r| r.status == Status::Failed)
                    .count(),
                key,
                estimates,
            }
        })
        .collect();
    let (paired_axes, paired) = paired_differences(info, records, scores, &axes);
    Summary {
        axes,
        metrics: scores.metrics.clone(),
        rows,
        paired_axes,
        paired,
    }
}

/// Every pair of negative modes on the axis `negative` (in the experiment's order), per
/// condition of the other axes: the differences of each metric on the same seed.
fn paired_differences(
    info: &RunInfo,
    records: &[Record],
    scores: &ScoreTable,
    axes: &[String],
) -> (Vec<String>, Vec<PairedRow>) {
    let Some(modes) = info
        .axes
        .iter()
        .find(|a| a.name == "negative")
        .map(|a| a.values.clone())
    else {
        return (Vec::new(), Vec::new());
    };
    let others: Vec<String> = axes.iter().filter(|a| *a != "negative").cloned().collect();
    // (ordered condition key) -> seed -> mode -> metric values
    type BySeed<'a> = BTreeMap<u64, HashMap<String, &'a Vec<f64>>>;
    let mut groups: Groups<BySeed> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == Status::Done) {
        let Some(values) = scores.values.get(&r.cell_id) else {
            continue;
        };
        let key = key_of(r, &others);
        groups
            .entry(order_of(info, &others, &key))
            .or_insert_with(|| (key, BTreeMap::new()))
            .1
            .entry(r.seed)
            .or_default()
            .insert(r.negative.to_string(), values);
    }
    let mut rows = Vec::new();
    for (key, by_seed) in groups.into_values() {
        let label = key.join("\u{1f}");
        for (i, a) in modes.iter().enumerate() {
            for b in &modes[i + 1..] {
                for (m, metric) in scores.metrics.iter().enumerate() {
                    let diffs: Vec<f64> = by_seed
                        .values()
                        .filter_map(|modes| Some(modes.get(b)?[m] - modes.get(a)?[m]))
                        .filter(|d| !d.is_nan())
                        .collect();
                    if diffs.is_empty() {
                        continue;
                    }
                    let greater = diffs.iter().filter(|d| **d > 0.0).count();
                    rows.push(PairedRow {
                        key: key.clone(),
                        metric: metric.clone(),
                        a: a.clone(),
                        b: b.clone(),
                        estimate: Estimate::of(
                            &diffs,
                            &format!("{label}\u{1e}{metric}\u{1e}{a}-{b}"),
                        ),
                        b_greater: greater as f64 / diffs.len() as f64,
                    });
                }
            }
        }
    }
    (others, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
    }

    #[test]
    fn estimate_of_a_known_sample() {
        let e = Estimate::of(&[1.0, 2.0, 3.0, 4.0, f64::NAN], "x");
        assert_eq!(e.n, 4);
        assert!((e.mean - 2.5).abs() < 1e-12);
        assert!((e.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(e.ci_lo < e.mean && e.mean < e.ci_hi);
        assert!(e.ci_lo >= 1.0 && e.ci_hi <= 4.0);
        // Deterministic: the same label gives the same interval.
        assert_eq!(Estimate::of(&[1.0, 2.0, 3.0, 4.0], "x"), e);
        let one = Estimate::of(&[0.5], "y");
        assert_eq!(one.mean, 0.5);
        assert!(one.std.is_nan() && one.ci_lo.is_nan());
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_at_the_expected_rate() {
        // Normal-ish samples (sum of uniforms) of size 30 with true mean 0: the 95% percentile
        // interval should cover 0 in roughly 90-98% of 400 trials.
        let mut rng = SplitMix64::new(7);
        let mut covered = 0;
        for t in 0..400 {
            let v: Vec<f64> = (0..30)
                .map(|_| {
                    (0..12)
                        .map(|_| rng.below(1_000_000) as f64 / 1e6)
                        .sum::<f64>()
                        - 6.0
                })
                .collect();
            let (lo, hi) = bootstrap_ci(&v, &t.to_string());
            if lo <= 0.0 && 0.0 <= hi {
                covered += 1;
            }
        }
        assert!((360..=395).contains(&covered), "covered {covered}/400");
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.25) - 1.75).abs() < 1e-12);
    }
}
