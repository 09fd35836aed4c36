//! Subject-level statistics: the effect of a condition pooled over the `subject` axis, with
//! the subject as the unit and the seeds nested in it.
//!
//! For one condition and metric, subject s has paired differences `d_s1..d_sn` (its seeds
//! against the baseline) and mean `m_s`. The pooled effect is `mean_s m_s` (each subject
//! counts once, whatever its seed count):
//! - interval: two-stage percentile bootstrap: draw S subjects with replacement, then for
//!   each drawn subject its n_s differences with replacement; the statistic is the mean of the
//!   drawn subjects' means; [`BOOTSTRAP_RESAMPLES`] resamples, 2.5% and 97.5% quantiles
//!   (numpy's linear interpolation), one SplitMix64 stream per condition and metric;
//! - p: two-sided sign-flip permutation test on the subject means `m_s` ([`sign_flip_p`]);
//! - p_holm: Holm across the pooled conditions, one family per metric;
//! - share: subjects whose own paired test (sign-flip, McNemar for 0/1 measures) has
//!   p < [`SUBJECT_ALPHA`], uncorrected, with the mean moving the right way.
use super::metrics::{self, Direction};
use super::stats::{
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, BaseDiff, CONFIDENCE, Estimate, SplitMix64, SummaryRow,
    fnv1a, holm, quantile, sign_flip_p,
};
use std::collections::BTreeMap;

/// The `subject` value of a pooled row in tables.
pub const POOLED: &str = "pooled";
/// The level at which a subject's own effect counts as significant in the share.
pub const SUBJECT_ALPHA: f64 = 0.05;

/// One condition pooled over its subjects.
#[derive(Clone, Debug)]
pub struct PooledRow {
    /// The condition's values on the summary's axes, `subject` = [`POOLED`].
    pub key: Vec<String>,
    /// Per metric (summary order): the pooled difference to the baseline.
    pub vs_base: Vec<Option<Pooled>>,
}

#[derive(Clone, Debug)]
pub struct Pooled {
    /// `estimate`: n = subjects, mean and std of the subject means, two-stage interval;
    /// `p`, `p_holm` as above; `wins`: subjects with a significant effect the right way
    /// (either way for undirected metrics); `win_rate`: their share.
    pub diff: BaseDiff,
    /// Each subject's own difference (its row of the summary), for forest plots.
    pub subjects: Vec<(String, BaseDiff)>,
}

/// How the pooled rows are made, for the summaries.
pub fn method_note() -> String {
    format!(
        "Pooled over subjects: the mean of the subjects' mean paired differences; interval: \
         {:.0}% two-stage percentile bootstrap (subjects with replacement, then each drawn \
         subject's seeds with replacement), {BOOTSTRAP_RESAMPLES} seeded resamples; p: \
         sign-flip permutation test on the subject means; p_holm across the pooled \
         conditions; share: subjects whose own test has p < {SUBJECT_ALPHA} (uncorrected) in \
         the right direction.",
        100.0 * CONFIDENCE
    )
}

/// The pooled rows of a summary whose `axes` include `subject` (none otherwise): the
/// non-baseline rows grouped by their values on the other axes, in first-seen order.
pub fn pool(axes: &[String], metric_names: &[String], rows: &[SummaryRow]) -> Vec<PooledRow> {
    let Some(at) = axes.iter().position(|a| a == "subject") else {
        return Vec::new();
    };
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut groups: BTreeMap<Vec<String>, Vec<&SummaryRow>> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| !r.is_baseline && !r.vs_base.is_empty())
    {
        let mut key = row.key.clone();
        key[at] = POOLED.to_string();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(row);
    }
    let mut pooled: Vec<PooledRow> = order
        .into_iter()
        .map(|key| {
            let members = &groups[&key];
            let label = key.join("\u{1f}");
            let vs_base = metric_names
                .iter()
                .enumerate()
                .map(|(m, metric)| {
                    let subjects: Vec<(String, BaseDiff)> = members
                        .iter()
                        .filter_map(|r| Some((r.key[at].clone(), r.vs_base.get(m)?.clone()?)))
                        .collect();
                    pooled_metric(
                        metric,
                        subjects,
                        &format!("{label}\u{1e}{metric}\u{1e}pooled"),
                    )
                })
                .collect();
            PooledRow { key, vs_base }
        })
        .collect();
    for m in 0..metric_names.len() {
        let p: Vec<f64> = pooled
            .iter()
            .map(|r| r.vs_base[m].as_ref().map_or(f64::NAN, |d| d.diff.p))
            .collect();
        for (row, adjusted) in pooled.iter_mut().zip(holm(&p)) {
            if let Some(d) = &mut row.vs_base[m] {
                d.diff.p_holm = adjusted;
            }
        }
    }
    pooled
}

/// One metric of one condition over its subjects.
fn pooled_metric(metric: &str, subjects: Vec<(String, BaseDiff)>, label: &str) -> Option<Pooled> {
    if subjects.is_empty() {
        return None;
    }
    let means: Vec<f64> = subjects.iter().map(|(_, d)| d.estimate.mean).collect();
    let groups: Vec<&[f64]> = subjects.iter().map(|(_, d)| d.diffs.as_slice()).collect();
    let mut estimate = Estimate::of(&means, label);
    let direction = metrics::direction(metric);
    if metrics::is_condition_level(metric) {
        estimate.ci_lo = f64::NAN;
        estimate.ci_hi = f64::NAN;
        return Some(Pooled {
            diff: BaseDiff {
                estimate,
                p: f64::NAN,
                p_holm: f64::NAN,
                direction,
                wins: 0,
                win_rate: f64::NAN,
                diffs: means,
            },
            subjects,
        });
    }
    (estimate.ci_lo, estimate.ci_hi) = two_stage_bootstrap_ci(&groups, label);
    let right_way = |d: &BaseDiff| match direction {
        Direction::Lower => d.estimate.mean < 0.0,
        Direction::Higher => d.estimate.mean > 0.0,
        Direction::Undirected => d.estimate.mean != 0.0,
    };
    let wins = subjects
        .iter()
        .filter(|(_, d)| d.p < SUBJECT_ALPHA && right_way(d))
        .count();
    Some(Pooled {
        diff: BaseDiff {
            estimate,
            p: sign_flip_p(&means, label),
            p_holm: f64::NAN,
            direction,
            wins,
            win_rate: wins as f64 / subjects.len() as f64,
            diffs: means,
        },
        subjects,
    })
}

/// The two-stage percentile bootstrap interval of the mean of group means (see the module
/// text); NaN with fewer than 2 groups. Empty groups are not allowed.
pub fn two_stage_bootstrap_ci(groups: &[&[f64]], label: &str) -> (f64, f64) {
    let s = groups.len();
    if s < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64::new(BOOTSTRAP_SEED ^ fnv1a(label));
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let mut total = 0.0;
            for _ in 0..s {
                let g = groups[rng.below(s)];
                let n = g.len();
                let mut sum = 0.0;
                for _ in 0..n {
                    sum += g[rng.below(n)];
                }
                total += sum / n as f64;
            }
            total / s as f64
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - CONFIDENCE) / 2.0;
    (quantile(&stats, alpha), quantile(&stats, 1.0 - alpha))
}
