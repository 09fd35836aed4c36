//! `negimg plan` and `negimg run` of experiments/when-tiny.toml (tiny random models,
//! offline): step-set probes and from/until sweeps with `neg_off = "no_image"` against a
//! no-negative baseline; plan prints the UNet row-steps with and without shared
//! trajectories, records.csv and the PNG text carry the step sets; x̂₀ trace files carry
//! their cell's PNG text and step; the x̂₀ traces are scored against the baseline's traces
//! at the same step; the report has the "When" section.
mod common;

use negimg::params::{NegOff, NegativeMode};
use negimg::run::records::{Record, Status, read_records};
use negimg::scoring::{self, pixel, traces};
use std::path::Path;

#[test]
fn when_tiny_runs_step_set_probes_with_shared_trajectories() {
    // 2 modes x (4 probes + 3 from + 2 until) x 2 seeds.
    let (dir, run) = common::run_copied_experiment("run_when", "when-tiny", 36);
    let plan = common::plan("experiments/when-tiny.toml", &dir);
    let line = plan
        .lines()
        .find(|l| l.starts_with("UNet row-steps:"))
        .unwrap_or_else(|| panic!("no row-steps line:\n{plan}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // One at a time: 20 distinct images (18 image cells + 1 baseline per seed) x 2 rows x 4
    // steps; shared: far fewer.
    assert_eq!(numbers[0], 20 * 2 * 4, "{line}");
    assert!(numbers[1] * 5 < numbers[0] * 3, "{line}");
    // The baseline is one image per seed (neg_off = no_image: its step set changes nothing).
    assert!(plan.contains("20 images for 36 cells"), "{plan}");
    // x̂₀ at steps 0 and 2 of each of the 20 images.
    assert!(plan.contains("x̂₀ traces: 40 more VAE decodes"), "{plan}");
    assert!(!plan.contains("without an x̂₀ at the same step"), "{plan}");
    plan_warns_of_traces_without_a_baseline_trace(&dir);
    let records = read_records(&run.join("records.csv")).unwrap();
    for r in &records {
        let id = r
            .file
            .trim_start_matches("images/")
            .trim_end_matches(".png");
        for step in ["step-000.png", "step-002.png"] {
            let trace = run.join("traces").join(id).join(step);
            assert!(trace.is_file(), "{}", trace.display());
        }
        assert!(!run.join("traces").join(id).join("step-001.png").exists());
        assert_eq!(r.field("trace").unwrap(), "every 2");
    }
    assert!(records.iter().all(|r| r.status == Status::Done));
    assert!(records.iter().all(|r| r.neg_off == NegOff::NoImage));
    let sets: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| r.field("neg_steps_at").unwrap())
        .collect();
    for s in ["0", "3", "from 1", "until 2"] {
        assert!(sets.contains(s), "{sets:?}");
    }
    let none_files: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.negative == NegativeMode::None)
        .map(|r| r.file.as_str())
        .collect();
    assert_eq!(none_files.len(), 2, "{none_files:?}");
    let probe = records
        .iter()
        .find(|r| r.negative == NegativeMode::Image && r.field("neg_steps_at").unwrap() == "3")
        .unwrap();
    let chunks = negimg::run::png::read_texts(&run.join(&probe.file)).unwrap();
    let text = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        text.contains("Negative steps: \"3\", Negative off: no_image"),
        "{text}"
    );
    // Its traces carry the image's texts and their step; a replay refuses them.
    let id = probe
        .file
        .trim_start_matches("images/")
        .trim_end_matches(".png");
    let trace = run.join("traces").join(id).join("step-002.png");
    let trace_chunks = negimg::run::png::read_texts(&trace).unwrap();
    let field = |k: &str| &trace_chunks.iter().find(|(key, _)| key == k).unwrap().1;
    assert_eq!(field("parameters"), &format!("{text}, Trace step: 2"));
    let json: serde_json::Value = serde_json::from_str(field("negimg")).unwrap();
    let image_json = &chunks.iter().find(|(k, _)| k == "negimg").unwrap().1;
    let mut expect: serde_json::Value = serde_json::from_str(image_json).unwrap();
    expect["trace_step"] = 2.into();
    assert_eq!(json, expect);
    let replay = common::negimg(
        &[
            "generate",
            "--replay",
            trace.to_str().unwrap(),
            "--out",
            "x.png",
        ],
        &dir,
    );
    let err = String::from_utf8_lossy(&replay.stderr);
    assert!(!replay.status.success(), "{err}");
    assert!(err.contains("x̂₀ trace of step 2"), "{err}");
    assert!(!dir.join("x.png").exists());
    trace_scores_pair_to_the_baseline_trace_at_the_same_step(&run, &records);
    when_report_has_probe_and_trace_curves_and_filmstrips(&run);
}

/// when-tiny with the baseline traced at steps 0 and 3 and the probes at 0 and 2: plan
/// warns, naming the file, line and key of `trace`, that the probes' step 2 has no
/// baseline x̂₀.
fn plan_warns_of_traces_without_a_baseline_trace(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("experiments/when-tiny.toml")).unwrap();
    let grid = "negative = [\"none\", \"image\"]\n";
    let zip = "trace = [\"every 3\", \"every 2\"]";
    let unpaired = text.replace(grid, "").replace(
        "\n[scoring]",
        &format!("\n[[grid.zip]]\n{grid}{zip}\n\n[scoring]"),
    );
    assert_ne!(unpaired, text);
    std::fs::write(dir.join("experiments/when-unpaired.toml"), &unpaired).unwrap();
    let plan = common::plan("experiments/when-unpaired.toml", dir);
    let line = unpaired.lines().position(|l| l == zip).unwrap() + 1;
    let warning = plan
        .lines()
        .find(|l| l.contains("without an x̂₀ at the same step"))
        .unwrap_or_else(|| panic!("no unpaired-trace warning:\n{plan}"));
    // 9 probes x 2 seeds, each at its step 2.
    assert!(
        warning.starts_with(&format!(
            "warning: experiments/when-unpaired.toml:{line} (grid.zip"
        )) && warning.contains("18 traced x̂₀")
            && warning.contains("at step 2"),
        "{warning}"
    );
}

/// The record of the image cell with `neg_steps_at = set` and its baseline (same seed).
fn probe_and_baseline<'a>(records: &'a [Record], set: &str, seed: u64) -> (&'a Record, &'a Record) {
    let find = |mode: NegativeMode| {
        records
            .iter()
            .find(|r| {
                r.negative == mode && r.seed == seed && r.field("neg_steps_at").unwrap() == set
            })
            .unwrap()
    };
    (find(NegativeMode::Image), find(NegativeMode::None))
}

fn trace_scores_pair_to_the_baseline_trace_at_the_same_step(run: &Path, records: &[Record]) {
    let ids = scoring::scorers(run).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let dir = scoring::scorer_dir(run, &ids[0]);
    let table = traces::read(&dir.join(traces::FILE))
        .unwrap()
        .expect("trace_scores.csv");
    let finals = scoring::read_scores(&dir.join("scores.csv")).unwrap();
    // Every done cell at steps 0 and 2.
    assert_eq!(table.rows.len(), records.len() * 2);
    let col = |name: &str| table.metrics.iter().position(|m| m == name).unwrap();
    let image_id = |r: &Record| {
        r.file
            .trim_start_matches("images/")
            .trim_end_matches(".png")
            .to_string()
    };
    let load = |f: &str| image::open(run.join(f)).unwrap().to_rgb8();
    for row in &table.rows {
        let r = records.iter().find(|r| r.cell_id == row.cell_id).unwrap();
        let want = format!("traces/{}/step-{:03}.png", image_id(r), row.step);
        assert_eq!(row.file, want);
        let (_, base) = probe_and_baseline(records, &r.field("neg_steps_at").unwrap(), r.seed);
        let base_file = format!("traces/{}/step-{:03}.png", image_id(base), row.step);
        assert_eq!(row.baseline_file, base_file, "{row:?}");
        let mad = pixel::mean_abs_diff(&load(&row.file), &load(&base_file));
        assert_eq!(row.values[col("mad_base")], mad, "{row:?}");
    }
    let at = |r: &Record, step: usize| {
        table
            .rows
            .iter()
            .find(|t| t.cell_id == r.cell_id && t.step == step)
            .unwrap()
    };
    let (i_pos, i_base) = (col("clip_i_pos"), col("clip_i_base"));
    for seed in [1, 2] {
        // neg_off = no_image: the probe at step 3 equals its baseline up to step 2, so its x̂₀
        // at steps 0 and 2 is the baseline's; the final images differ.
        let (probe, base) = probe_and_baseline(records, "3", seed);
        for step in [0, 2] {
            let t = at(probe, step);
            assert!(t.values[col("mad_base")] < 2e-3, "{t:?}");
            assert!(t.values[i_base] > 0.9999, "{t:?}");
            assert!(
                (t.values[i_pos] - at(base, step).values[i_pos]).abs() < 1e-3,
                "{t:?}"
            );
        }
        // The trace scores are the x̂₀'s, not the final image's.
        let final_pos = finals.values[&probe.cell_id][finals
            .metrics
            .iter()
            .position(|m| m == "clip_i_pos")
            .unwrap()];
        assert!(
            (at(probe, 0).values[i_pos] - final_pos).abs() > 1e-6,
            "{final_pos}"
        );
        // The probe at step 0 acts at step 0: its x̂₀ there is not the baseline's.
        let (probe0, _) = probe_and_baseline(records, "0", seed);
        assert!(at(probe0, 0).values[col("mad_base")] > 0.0);
    }
}

fn when_report_has_probe_and_trace_curves_and_filmstrips(run: &Path) {
    let id = &scoring::scorers(run).unwrap()[0];
    let page = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(page.contains("<h2>When</h2>"), "no When section");
    assert!(page.contains("Filmstrips:"), "no filmstrips");
    for stem in [
        "probe_neg_steps_at_clip_i_neg",
        "probe_neg_steps_at_clip_i_pos",
        "trace_clip_i_pos",
        "trace_mad_base",
    ] {
        for ext in ["svg", "png"] {
            let rel = format!("when/{id}/{stem}.{ext}");
            assert!(run.join(&rel).is_file(), "{rel}");
            assert!(page.contains(&rel), "{rel} not on the page");
        }
    }
    // The grid cells are filmstrips: 2 x̂₀ frames and the image per seed.
    let grid = image::open(run.join("grids/grid.png")).unwrap();
    let frames = 9 * 2 * 3;
    assert!(grid.width() > frames * 32, "grid {} px wide", grid.width());
}
