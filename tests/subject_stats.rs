//! Subject-level statistics and the removal rate's paired test, against numpy/scipy at test
//! time (`tests/reference/subject_stats_reference.py`):
//! - the two-stage bootstrap is run in Python on negimg's own SplitMix64 stream: the same
//!   draws, so the interval must agree exactly (up to float rounding);
//! - the pooled effect of `summarize` (one run with subjects): mean exact, the sign-flip p on
//!   the subject means exact (scipy enumerates), the interval statistically against numpy's
//!   two-stage bootstrap with its own generator (200000 resamples), the share of significant
//!   subjects exact against scipy's per-subject p;
//! - McNemar's exact test against `scipy.stats.binomtest`;
//! - with subjects that differ, the pooled interval is wider than the one that treats every
//!   image as independent.
mod common;

use negimg::experiment::CellSpec;
use negimg::params::NegativeMode;
use negimg::run::info::{Axis, RunInfo};
use negimg::run::records::{Record, Status};
use negimg::scoring::pooled::{SUBJECT_ALPHA, two_stage_bootstrap_ci};
use negimg::scoring::stats::{
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, Estimate, ScoreTable, SplitMix64, fnv1a,
    mcnemar_exact, summarize,
};
use std::collections::HashMap;

fn normalish(rng: &mut SplitMix64, n: usize, shift: f64, scale: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u: f64 = (0..6).map(|_| rng.below(1_000_000) as f64 / 1e6).sum();
            (u - 3.0) * scale + shift
        })
        .collect()
}

/// A run with `subjects.len()` subjects × {none, image} × seeds: the baseline scores 0, the
/// image cell of subject s and seed j scores `subjects[s][j]` on `clip_i_neg`, and
/// `neg_present` goes 1 -> 0 where that difference is below `-0.05`.
fn run_with_subjects(subjects: &[Vec<f64>]) -> (RunInfo, Vec<Record>, ScoreTable) {
    let names: Vec<String> = (0..subjects.len()).map(|s| format!("s{s}")).collect();
    let seeds = subjects[0].len();
    let info = RunInfo {
        experiment: "subjects".into(),
        run_id: "test".into(),
        axes: vec![
            Axis {
                name: "subject".into(),
                values: names.clone(),
            },
            Axis {
                name: "negative".into(),
                values: vec!["none".into(), "image".into()],
            },
            Axis {
                name: "seed".into(),
                values: (0..seeds).map(|j| j.to_string()).collect(),
            },
        ],
        plots: Default::default(),
        scoring: Default::default(),
        images: Default::default(),
        captions: Default::default(),
        subjects: Default::default(),
    };
    let mut records = Vec::new();
    let mut values = HashMap::new();
    for (s, diffs) in subjects.iter().enumerate() {
        for mode in [NegativeMode::None, NegativeMode::Image] {
            for (j, d) in diffs.iter().enumerate() {
                let cell = CellSpec {
                    negative: Some(mode),
                    positive_image: Some(format!("{}.positive", names[s])),
                    negative_image: Some(format!("{}.negative", names[s])),
                    seed: j as u64,
                    subject: Some(names[s].clone()),
                    ..Default::default()
                };
                let id = format!("{s}-{mode}-{j}");
                records.push(Record::new(&id, &cell, Status::Done, "x.png", 0.0, ""));
                let (neg, present) = match mode {
                    NegativeMode::None => (0.0, 1.0),
                    _ => (*d, if *d < -0.05 { 0.0 } else { 1.0 }),
                };
                values.insert(id, vec![neg, present]);
            }
        }
    }
    let scores = ScoreTable {
        metrics: vec!["clip_i_neg".into(), "neg_present".into()],
        values,
    };
    (info, records, scores)
}

fn reference(input: &serde_json::Value) -> serde_json::Value {
    let dir = common::scratch("subject_stats");
    let (inp, out) = (dir.join("in.json"), dir.join("out.json"));
    std::fs::write(&inp, input.to_string()).unwrap();
    common::run_python(
        "subject_stats_reference.py",
        &[inp.to_str().unwrap(), out.to_str().unwrap()],
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[test]
fn subject_pooling_and_removal_mcnemar_match_numpy_and_scipy() {
    let mut rng = SplitMix64::new(2026);
    // Shared-stream cases: unequal seed counts, 2 to 12 subjects.
    let shared: Vec<Vec<Vec<f64>>> = [(2, 5), (5, 8), (12, 8)]
        .iter()
        .enumerate()
        .map(|(c, &(s, n))| {
            (0..s)
                .map(|i| normalish(&mut rng, n + (i + c) % 3, 0.05 * i as f64, 0.1))
                .collect()
        })
        .collect();
    let labels: Vec<String> = (0..shared.len()).map(|c| format!("shared {c}")).collect();
    // Pooled cases through `summarize`: 6 and 10 subjects of 8 seeds with different effects.
    let pooled: Vec<Vec<Vec<f64>>> = [(6, -0.08), (10, -0.02)]
        .iter()
        .map(|&(s, effect)| {
            (0..s)
                .map(|i| {
                    normalish(
                        &mut rng,
                        8,
                        effect + 0.03 * (i as f64 - s as f64 / 2.0),
                        0.08,
                    )
                })
                .collect()
        })
        .collect();
    let mcnemar: Vec<(u64, u64)> = vec![(0, 0), (3, 0), (7, 1), (1, 7), (5, 5), (12, 2), (40, 25)];
    let want = reference(&serde_json::json!({
        "shared": shared.iter().zip(&labels).map(|(g, l)| serde_json::json!({
            "groups": g, "seed": BOOTSTRAP_SEED ^ fnv1a(l),
        })).collect::<Vec<_>>(),
        "pooled": pooled.iter().map(|g| serde_json::json!({"groups": g})).collect::<Vec<_>>(),
        "resamples": BOOTSTRAP_RESAMPLES,
        "confidence": CONFIDENCE,
        "mcnemar": mcnemar,
    }));

    for (c, groups) in shared.iter().enumerate() {
        let slices: Vec<&[f64]> = groups.iter().map(Vec::as_slice).collect();
        let (lo, hi) = two_stage_bootstrap_ci(&slices, &labels[c]);
        let (tlo, thi) = (
            want["shared"][c][0].as_f64().unwrap(),
            want["shared"][c][1].as_f64().unwrap(),
        );
        assert!(
            (lo - tlo).abs() < 1e-12 && (hi - thi).abs() < 1e-12,
            "shared stream case {c}: ours [{lo}, {hi}], reference [{tlo}, {thi}]"
        );
        assert!(lo < hi);
    }

    for (c, groups) in pooled.iter().enumerate() {
        let (info, records, scores) = run_with_subjects(groups);
        let summary = summarize(&info, &records, &scores);
        assert_eq!(summary.pooled.len(), 1, "one pooled condition");
        let row = &summary.pooled[0];
        assert_eq!(row.key, vec!["pooled".to_string(), "image".into()]);
        let d = row.vs_base[0].as_ref().expect("clip_i_neg pooled");
        let theirs = &want["pooled"][c];
        let e = &d.diff.estimate;
        assert_eq!(e.n, groups.len());
        assert!((e.mean - theirs["mean"].as_f64().unwrap()).abs() < 1e-12);
        let p = theirs["p"].as_f64().unwrap();
        assert!(
            (d.diff.p - p).abs() < 1e-12,
            "p: ours {}, scipy {p}",
            d.diff.p
        );
        // Monte Carlo error of 2000 resamples: a quantile's sd is about 0.06 of the
        // bootstrap distribution's sd; 0.3 of it leaves room for both generators.
        let sd = e.std / (groups.len() as f64).sqrt();
        for (ours, key) in [(e.ci_lo, "lo"), (e.ci_hi, "hi")] {
            let t = theirs[key].as_f64().unwrap();
            assert!(
                (ours - t).abs() < 0.3 * sd,
                "case {c} {key}: ours {ours}, numpy {t}, tolerance {}",
                0.3 * sd
            );
        }
        let expected_wins = groups
            .iter()
            .zip(theirs["subject_p"].as_array().unwrap())
            .filter(|(g, p)| p.as_f64().unwrap() < SUBJECT_ALPHA && g.iter().sum::<f64>() < 0.0)
            .count();
        assert_eq!(d.diff.wins, expected_wins, "significant subjects");
        assert_eq!(d.subjects.len(), groups.len(), "per-subject rows stay");
        // Per-subject rows stay in the summary, one per subject and mode.
        assert_eq!(summary.rows.len(), 2 * groups.len());
    }
    // The share is not trivially 0 or 1 in these cases, so a wrong rule would show.
    let (info, records, scores) = run_with_subjects(&pooled[0]);
    let share = summarize(&info, &records, &scores).pooled[0].vs_base[0]
        .as_ref()
        .unwrap()
        .diff
        .win_rate;
    assert!(share > 0.0 && share < 1.0, "share {share}");

    for (i, (b, c)) in mcnemar.iter().enumerate() {
        let ours = mcnemar_exact(*b, *c);
        let theirs = want["mcnemar"][i].as_f64().unwrap();
        assert!(
            (ours - theirs).abs() < 1e-12,
            "McNemar b={b} c={c}: ours {ours}, scipy {theirs}"
        );
    }
}

#[test]
fn removal_rows_use_mcnemar_on_the_discordant_pairs() {
    // One subject, 10 seeds: 7 go from present to absent, none back.
    let diffs: Vec<f64> = (0..10).map(|j| if j < 7 { -0.1 } else { 0.0 }).collect();
    let (info, records, scores) = run_with_subjects(&[diffs.clone(), diffs]);
    let summary = summarize(&info, &records, &scores);
    let row = summary
        .rows
        .iter()
        .find(|r| r.key == ["s0", "image"])
        .unwrap();
    let d = row.vs_base[1].as_ref().unwrap();
    assert!((d.estimate.mean + 0.7).abs() < 1e-12, "rate change");
    assert_eq!(d.p, mcnemar_exact(7, 0));
    // The sign-flip test would enumerate 2^10 vectors with zeros: the same value for 0/1
    // data; McNemar is exact for any number of pairs.
    assert!((d.p - 2.0 / 128.0).abs() < 1e-15);
    assert_eq!(d.wins, 7);
    // The removal rate of the condition: presence 0.3 against 1.0 at the baseline.
    assert!((row.estimates[1].mean - 0.3).abs() < 1e-12);
}

#[test]
fn subject_pooled_interval_is_wider_than_treating_images_as_independent() {
    // Subjects whose effects differ (-0.3 .. +0.1), seeds that agree within a subject.
    let mut rng = SplitMix64::new(11);
    let groups: Vec<Vec<f64>> = (0..8)
        .map(|s| normalish(&mut rng, 8, -0.3 + 0.057 * s as f64, 0.02))
        .collect();
    let (info, records, scores) = run_with_subjects(&groups);
    let summary = summarize(&info, &records, &scores);
    let pooled = &summary.pooled[0].vs_base[0].as_ref().unwrap().diff.estimate;
    let all: Vec<f64> = groups.iter().flatten().copied().collect();
    let naive = Estimate::of(&all, "all images independent");
    let (wp, wn) = (pooled.ci_hi - pooled.ci_lo, naive.ci_hi - naive.ci_lo);
    assert!(
        (pooled.mean - naive.mean).abs() < 1e-12,
        "equal seed counts: same point estimate"
    );
    assert!(
        wp > 2.0 * wn,
        "pooled interval {wp} should be much wider than the naive {wn}"
    );
}
