//! Scoring a small run: per-image scores, summary tables, paired differences, two scorers
//! side by side, and `negimg score`.
mod common;
mod scoring_fixture;

use negimg::models::clip_model::{ClipConfig, write_random_model};
use negimg::models::tokenizer::find_open_clip_vocab;
use negimg::params::NegativeMode;
use negimg::run::records::Status;
use negimg::scoring;
use scoring_fixture::write_run;
use std::path::{Path, PathBuf};

const MODES: [NegativeMode; 3] = [NegativeMode::None, NegativeMode::Text, NegativeMode::Image];

/// A tiny random CLIPModel folder (shared by the tests of this file, written once per call).
fn tiny_scorer(dir: &Path, seed: i64) -> PathBuf {
    let vocab = find_open_clip_vocab().unwrap();
    write_random_model(dir, &ClipConfig::tiny(), seed, &vocab).unwrap();
    dir.to_path_buf()
}

#[test]
fn summary_has_one_row_per_condition_with_intervals_and_paired_differences() {
    let dir = common::scratch("scoring_summary");
    let fx = write_run(
        &dir,
        &[0.5, 1.0],
        &MODES,
        &[1, 2, 3, 4],
        Some((0, 2, 4)),
        false,
    );
    // Known scores: clip_i_pos = weight + seed/100 + (image: 0.1, text: 0.04).
    let id = "known-0000";
    let value = |w: f64, m: NegativeMode, s: u64| {
        w + s as f64 / 100.0
            + match m {
                NegativeMode::Image => 0.1,
                NegativeMode::Text => 0.04,
                _ => 0.0,
            }
    };
    scoring_fixture::write_known_scorer(
        &dir,
        id,
        "known",
        &fx,
        &["clip_i_pos", "clip_i_base"],
        |r| vec![value(r.weight, r.negative, r.seed), f64::NAN],
    );

    let sdir = scoring::scorer_dir(&dir, id);
    let summary = scoring::summarize_scorer(&dir, id).unwrap();
    assert_eq!(summary.axes, vec!["weight", "negative"]);
    assert_eq!(summary.rows.len(), 6, "weights x modes");
    let keys: Vec<Vec<String>> = summary.rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys[0], vec!["0.5", "none"]);
    assert_eq!(keys[2], vec!["0.5", "image"]);
    assert_eq!(keys[5], vec!["1.0", "image"]);
    let failed = &summary.rows[2];
    assert_eq!(
        (failed.n, failed.n_failed),
        (3, 1),
        "the failed cell is counted, not scored"
    );
    let e = summary.rows[1].estimates[0];
    assert!((e.mean - (0.5 + 0.025 + 0.04)).abs() < 1e-12);
    assert!((e.std - (0.0001f64 * 5.0 / 3.0).sqrt()).abs() < 1e-12);
    assert!(e.ci_lo < e.mean && e.mean < e.ci_hi);
    assert!(e.ci_lo >= 0.5 + 0.01 + 0.04 - 1e-12 && e.ci_hi <= 0.5 + 0.04 + 0.04 + 1e-12);

    // summary.csv: one row per condition, CI columns.
    let mut reader = csv::Reader::from_path(sdir.join("summary.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "weight",
        "negative",
        "n",
        "n_failed",
        "clip_i_pos_mean",
        "clip_i_pos_std",
        "clip_i_pos_ci_lo",
        "clip_i_pos_ci_hi",
    ] {
        assert!(header.contains(&col.to_string()), "summary.csv has {col}");
    }
    assert_eq!(reader.records().count(), 6);

    // Paired: image - text is exactly 0.06 on every seed (3 seeds at weight 0.5: one failed).
    let p = summary
        .paired
        .iter()
        .find(|p| p.key == ["0.5"] && p.a == "text" && p.b == "image" && p.metric == "clip_i_pos")
        .unwrap();
    assert_eq!(p.estimate.n, 3);
    assert!((p.estimate.mean - 0.06).abs() < 1e-12);
    assert!((p.estimate.ci_lo - 0.06).abs() < 1e-12 && (p.estimate.ci_hi - 0.06).abs() < 1e-12);
    assert_eq!(p.b_greater, 1.0);
    let paired = std::fs::read_to_string(sdir.join("paired.csv")).unwrap();
    assert!(paired.starts_with("weight,metric,a,b,n,mean_b_minus_a,std,ci_lo,ci_hi,b_greater"));

    let tex = std::fs::read_to_string(sdir.join("summary.tex")).unwrap();
    for part in [
        "\\toprule",
        "\\midrule",
        "\\bottomrule",
        "clip\\_i\\_pos",
        "image $-$ text",
    ] {
        assert!(tex.contains(part), "summary.tex has {part}");
    }
    assert!(
        !tex.contains("clip\\_i\\_base"),
        "all-empty metrics are left out of the tables"
    );
    let md = std::fs::read_to_string(sdir.join("summary.md")).unwrap();
    assert!(md.contains("| weight | negative | n | failed | clip_i_pos |"));
}

#[test]
fn scoring_twice_with_two_scorers_keeps_both() {
    let dir = common::scratch("scoring_two_scorers");
    let models = common::scratch("scoring_two_scorers_models");
    let a = tiny_scorer(&models.join("scorer-a"), 1);
    let b = tiny_scorer(&models.join("scorer-b"), 2);
    let fx = write_run(&dir, &[0.5, 1.0], &MODES, &[1, 2], Some((1, 1, 2)), true);

    scoring::score_run(&dir, &a, tch::Device::Cpu, tch::Kind::Float).unwrap();
    let id_a = scoring::scorer_id(&a).unwrap();
    assert!(id_a.starts_with("scorer-a-"), "{id_a}");
    let scores_a = scoring::scorer_dir(&dir, &id_a).join("scores.csv");
    let before = std::fs::read(&scores_a).unwrap();
    let table = scoring::read_scores(&scores_a).unwrap();
    assert_eq!(
        table.metrics,
        [
            "clip_i_pos",
            "clip_i_neg",
            "subtraction",
            "clip_i_base",
            "clip_t_1",
            "clip_t_cos_1",
            "clip_t_2",
            "clip_t_cos_2",
            "clip_div",
            "mad_base",
            "ssim_base",
            "change_entropy",
            "patch_change_entropy"
        ]
    );
    let done: Vec<_> = fx
        .records
        .iter()
        .filter(|r| r.status == Status::Done)
        .collect();
    assert_eq!(table.values.len(), done.len(), "one row per done image");
    for r in &done {
        let v = &table.values[&r.cell_id];
        assert!((v[2] - (v[0] - v[1])).abs() < 1e-12, "subtraction");
        assert!(
            v[0].abs() <= 1.0 + 1e-9 && v[1].abs() <= 1.0 + 1e-9,
            "cosines"
        );
        assert!(
            (v[4] - 100.0 * v[5].max(0.0)).abs() < 1e-9,
            "CLIPScore convention"
        );
        if r.negative == NegativeMode::None {
            assert!((v[3] - 1.0).abs() < 1e-6, "a none cell is its own baseline");
        } else {
            assert!(v[3] < 1.0 - 1e-6, "other cells differ from their baseline");
        }
    }
    let sum_a =
        std::fs::read_to_string(scoring::scorer_dir(&dir, &id_a).join("summary.csv")).unwrap();
    assert_eq!(sum_a.lines().count(), 1 + 6);

    // A second scorer through the command line: the first one's scores stay.
    let out = common::negimg(
        &[
            "score",
            dir.to_str().unwrap(),
            "--scorer",
            b.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "negimg score: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = scoring::scorers(&dir).unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(
        std::fs::read(&scores_a).unwrap(),
        before,
        "first scorer's scores untouched"
    );
    let id_b = scoring::scorer_id(&b).unwrap();
    assert_ne!(id_a, id_b);
    let table_b =
        scoring::read_scores(&scoring::scorer_dir(&dir, &id_b).join("scores.csv")).unwrap();
    let first = &done[1].cell_id;
    assert_ne!(
        table.values[first][0], table_b.values[first][0],
        "different models, different scores"
    );
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        html.contains(&id_a) && html.contains(&id_b),
        "the report shows both scorers"
    );
}

#[test]
fn conditions_are_paired_with_their_baseline_seed_by_seed() {
    let dir = common::scratch("scoring_baseline");
    let fx = write_run(&dir, &[0.5, 1.0], &MODES, &[1, 2, 3, 4, 5, 6], None, false);
    // clip_i_neg: image moves away from the negative on every seed (by 0.1 + seed/100);
    // text alternates (+0.02, -0.02): no effect. clip_i_pos: image +0.01 on seeds 1-5 only.
    let neg = |r: &negimg::run::records::Record| {
        0.8 - match r.negative {
            NegativeMode::Image => 0.1 + r.seed as f64 / 100.0,
            NegativeMode::Text => 0.02 * if r.seed.is_multiple_of(2) { 1.0 } else { -1.0 },
            _ => 0.0,
        }
    };
    let pos = |r: &negimg::run::records::Record| {
        0.5 + if r.negative == NegativeMode::Image && r.seed <= 5 {
            0.01
        } else {
            0.0
        }
    };
    let id = "known-base";
    scoring_fixture::write_known_scorer(
        &dir,
        id,
        "known",
        &fx,
        &["clip_i_pos", "clip_i_neg"],
        |r| vec![pos(r), neg(r)],
    );
    let summary = scoring::summarize_scorer(&dir, id).unwrap();
    assert_eq!(
        summary.baseline,
        [("negative".to_string(), "none".to_string())]
    );
    let row = |w: &str, m: &str| {
        summary
            .rows
            .iter()
            .find(|r| r.key == [w, m])
            .unwrap_or_else(|| panic!("no row {w} {m}"))
    };
    assert!(row("0.5", "none").is_baseline && row("0.5", "none").vs_base.is_empty());
    let image = row("1.0", "image");
    let d = image.vs_base[1].as_ref().expect("clip_i_neg difference");
    assert_eq!(d.estimate.n, 6);
    assert!((d.estimate.mean - -(0.1 + 3.5 / 100.0)).abs() < 1e-12);
    assert!(d.estimate.ci_hi < 0.0, "the interval excludes 0");
    // All six differences negative: only the two constant sign vectors reach |sum| -> 2/64.
    assert!((d.p - 2.0 / 64.0).abs() < 1e-12, "p = {}", d.p);
    assert_eq!((d.wins, d.win_rate), (6, 1.0));
    let p_pos = image.vs_base[0].as_ref().unwrap();
    assert_eq!((p_pos.wins, p_pos.estimate.n), (5, 6));
    let text = row("0.5", "text").vs_base[1].as_ref().unwrap();
    assert!(text.p > 0.5 && text.win_rate == 0.5, "text: {text:?}");
    // Holm over the four non-baseline conditions of clip_i_neg.
    let ps: Vec<f64> = summary
        .rows
        .iter()
        .filter(|r| !r.is_baseline)
        .map(|r| r.vs_base[1].as_ref().unwrap().p)
        .collect();
    assert_eq!(ps.len(), 4);
    let adjusted = scoring::stats::holm(&ps);
    let got: Vec<f64> = summary
        .rows
        .iter()
        .filter(|r| !r.is_baseline)
        .map(|r| r.vs_base[1].as_ref().unwrap().p_holm)
        .collect();
    assert_eq!(got, adjusted);
    assert!(
        (d.p_holm - 4.0 * 2.0 / 64.0).abs() < 1e-12,
        "smallest p times 4"
    );

    // summary.csv carries the paired columns; 6 seeds: reliable.
    let sdir = scoring::scorer_dir(&dir, id);
    let mut reader = csv::Reader::from_path(sdir.join("summary.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "baseline",
        "unreliable",
        "clip_i_neg_diff",
        "clip_i_neg_diff_ci_lo",
        "clip_i_neg_diff_ci_hi",
        "clip_i_neg_p",
        "clip_i_neg_p_holm",
        "clip_i_neg_win_rate",
    ] {
        assert!(header.contains(&col.to_string()), "summary.csv has {col}");
    }
    let unreliable = header.iter().position(|h| h == "unreliable").unwrap();
    assert!(reader.records().all(|r| &r.unwrap()[unreliable] == "false"));
    let verdict = std::fs::read_to_string(sdir.join("verdict.csv")).unwrap();
    assert!(verdict.starts_with("weight,negative,n,neg_metric,neg_diff"));
    assert_eq!(verdict.lines().count(), 1 + 4);
    assert!(
        verdict.contains(
            "the mean moved away from the negative, the hoped-for way; 6/6 seeds moved away \
             from it, p_holm=0.12"
        ),
        "{verdict}"
    );
    // A negative that pulls the mean towards itself while 2 of 6 seeds move away: the
    // reading says the mean went the wrong way before it counts the seeds.
    let towards = "known-towards";
    scoring_fixture::write_known_scorer(&dir, towards, "known", &fx, &["clip_i_neg"], |r| {
        let moved = match (r.negative, r.seed) {
            (NegativeMode::Image, 1 | 2) => -0.01,
            (NegativeMode::Image, _) => 0.05,
            _ => 0.0,
        };
        vec![0.8 + moved]
    });
    scoring::summarize_scorer(&dir, towards).unwrap();
    let wrong_way =
        std::fs::read_to_string(scoring::scorer_dir(&dir, towards).join("verdict.csv")).unwrap();
    assert!(
        wrong_way.contains(
            "the mean moved towards the negative, not the hoped-for way; 2/6 seeds moved \
             away from it"
        ),
        "{wrong_way}"
    );
    let tex = std::fs::read_to_string(sdir.join("verdict.tex")).unwrap();
    assert!(tex.contains("\\toprule") && tex.contains("$p_\\mathrm{Holm}$"));
    let md = std::fs::read_to_string(sdir.join("summary.md")).unwrap();
    assert!(md.contains("Paired differences to the baseline (negative = none)"));
    assert!(
        md.contains("sign-flip") && md.contains("2000"),
        "method stated"
    );

    // Another baseline: weight 0.5 of the same mode and seed.
    let mut info = fx.info.clone();
    info.scoring.baseline = [("weight".to_string(), "0.5".to_string())].into();
    std::fs::write(dir.join("run.json"), serde_json::to_string(&info).unwrap()).unwrap();
    let summary = scoring::summarize_scorer(&dir, id).unwrap();
    let image = summary
        .rows
        .iter()
        .find(|r| r.key == ["1.0", "image"])
        .unwrap();
    let d = image.vs_base[1].as_ref().unwrap();
    assert!(
        d.estimate.mean.abs() < 1e-12,
        "same mode, other weight: no change"
    );
    assert!(
        summary.rows.iter().filter(|r| r.is_baseline).count() == 3,
        "the three weight-0.5 conditions"
    );
}

#[test]
fn fewer_than_five_seeds_are_marked_unreliable() {
    let dir = common::scratch("scoring_unreliable");
    let fx = write_run(&dir, &[0.5], &MODES, &[1, 2], None, false);
    scoring_fixture::write_known_scorer(&dir, "k", "known", &fx, &["clip_i_neg"], |r| {
        vec![
            r.seed as f64 / 10.0
                + if r.negative == NegativeMode::Image {
                    -0.2
                } else {
                    0.0
                },
        ]
    });
    scoring::summarize_scorer(&dir, "k").unwrap();
    let sdir = scoring::scorer_dir(&dir, "k");
    let summary = std::fs::read_to_string(sdir.join("summary.csv")).unwrap();
    let header: Vec<&str> = summary.lines().next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == "unreliable").unwrap();
    for line in summary.lines().skip(1) {
        assert_eq!(line.split(',').nth(at), Some("true"), "{line}");
    }
    let md = std::fs::read_to_string(sdir.join("summary.md")).unwrap();
    assert!(md.contains("]†"), "marker in the tables:\n{md}");
    let tex = std::fs::read_to_string(sdir.join("verdict.tex")).unwrap();
    assert!(tex.contains("†"), "marker in the LaTeX verdict");
    let verdict = std::fs::read_to_string(sdir.join("verdict.csv")).unwrap();
    assert!(verdict.contains("2 seeds: unreliable"), "{verdict}");
}

/// An aesthetic head in the release's layout (`layers.{0,2,4,6,7}`), weights times
/// `weight_scale` (random) and the last bias `bias`.
fn aesthetic_head(path: &Path, weight_scale: f64, bias: f64) -> PathBuf {
    let shapes: [(&str, [i64; 2]); 5] = [
        ("layers.0", [1024, 768]),
        ("layers.2", [128, 1024]),
        ("layers.4", [64, 128]),
        ("layers.6", [16, 64]),
        ("layers.7", [1, 16]),
    ];
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let mut tensors = Vec::new();
    for (name, [out, inp]) in shapes {
        let w = tch::Tensor::randn([out, inp], opts) * weight_scale;
        let b = match name {
            "layers.7" => tch::Tensor::full([out], bias, opts),
            _ => tch::Tensor::randn([out], opts) * weight_scale,
        };
        tensors.push((format!("{name}.weight"), w));
        tensors.push((format!("{name}.bias"), b));
    }
    tch::Tensor::write_safetensors(&tensors, path).unwrap();
    path.to_path_buf()
}

#[test]
fn aesthetic_scores_land_in_the_clip_scorers_table_as_the_head_computes_them() {
    let dir = common::scratch("scoring_aesthetic");
    let models = common::scratch("scoring_aesthetic_models");
    let config = ClipConfig {
        projection_dim: 768,
        ..ClipConfig::tiny()
    };
    let scorer = models.join("scorer-768");
    write_random_model(&scorer, &config, 3, &find_open_clip_vocab().unwrap()).unwrap();
    write_run(&dir, &[0.5, 1.0], &MODES, &[1, 2], None, true);
    let score = |head: &Path| {
        let models = scoring::ScoreModels {
            clip: Some(scorer.clone()),
            dino: None,
            aesthetic: Some(head.to_path_buf()),
        };
        let ids = scoring::score_all(&dir, &models, tch::Device::Cpu, tch::Kind::Float).unwrap();
        scoring::read_scores(&scoring::scorer_dir(&dir, &ids[0]).join("scores.csv")).unwrap()
    };
    // A head with zero weights answers its last bias for every image.
    let constant = score(&aesthetic_head(&models.join("zero.safetensors"), 0.0, 0.37));
    let col =
        |t: &scoring::stats::ScoreTable, m: &str| t.metrics.iter().position(|x| x == m).unwrap();
    let a = col(&constant, "aesthetic");
    assert!(!constant.values.is_empty());
    for v in constant.values.values() {
        assert!((v[a] - 0.37).abs() < 1e-6, "{}", v[a]);
    }
    // A random head gives each image its own score; the CLIP metrics do not change.
    let random = score(&aesthetic_head(
        &models.join("random.safetensors"),
        0.05,
        0.0,
    ));
    let scores: Vec<f64> = random.values.values().map(|v| v[a]).collect();
    assert!(scores.iter().all(|s| s.is_finite()));
    let spread = scores.iter().cloned().fold(f64::MIN, f64::max)
        - scores.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 1e-6, "{scores:?}");
    let pos = col(&random, "clip_i_pos");
    for (cell, v) in &random.values {
        assert_eq!(v[pos], constant.values[cell][pos], "{cell}");
    }
}
