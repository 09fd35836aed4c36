//! `negimg plan` and `negimg run` of experiments/when-tiny.toml (tiny random models,
//! offline): step-set probes and from/until sweeps with `neg_off = "no_image"` against a
//! no-negative baseline; plan prints the UNet row-steps with and without shared
//! trajectories, records.csv and the PNG text carry the step sets; x̂₀ trace files carry
//! their cell's PNG text and step.
mod common;

use negimg::params::{NegOff, NegativeMode};
use negimg::run::records::{Status, read_records};

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
}
