//! `negimg run experiments/smoke.toml` from a fresh folder: makes its tiny models
//! (init_random), its input images, every cell, scores and plots; a second run makes nothing
//! and changes no image. The other shipped experiments pass `plan`'s checks.
mod common;

use negimg::run::records::{Status, read_records};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

fn images(run: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(run.join("images"))
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                (std::fs::read(e.path()).unwrap(), meta.modified().unwrap()),
            )
        })
        .collect()
}

#[test]
fn smoke_run_makes_the_whole_results_tree_and_a_rerun_changes_nothing() {
    let dir = common::scratch("run_smoke");
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    std::fs::copy(
        common::repo().join("experiments/smoke.toml"),
        dir.join("experiments/smoke.toml"),
    )
    .unwrap();
    let out = common::negimg(&["--device", "cpu", "run", "experiments/smoke.toml"], &dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("48 cells; 48 made now, 0 kept from before"),
        "{text}"
    );
    assert!(
        dir.join("models/tiny/pipeline/model_index.json").is_file(),
        "init_random"
    );

    let runs: Vec<_> = std::fs::read_dir(dir.join("results/smoke"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(runs.len(), 1);
    let run = runs[0].path();
    for f in [
        "records.csv",
        "manifest.json",
        "run.json",
        "experiment.toml",
        "log.txt",
        "batch.json",
        "inputs/house.png",
        "inputs/lawn.png",
        "inputs/snow.png",
        "index.html",
    ] {
        assert!(run.join(f).is_file(), "{f} missing:\n{text}");
    }
    assert!(run.join("scores").is_dir() && run.join("grids").is_dir());
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), 48);
    assert!(
        records
            .iter()
            .all(|r| r.status == Status::Done && r.seconds > 0.0)
    );
    let modes: std::collections::BTreeSet<String> =
        records.iter().map(|r| r.negative.to_string()).collect();
    assert_eq!(modes.len(), 4, "every negative mode");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["experiment_text"].as_str().unwrap(),
        std::fs::read_to_string(common::repo().join("experiments/smoke.toml")).unwrap()
    );
    for key in ["git_revision", "libtorch", "negimg_version"] {
        assert!(!manifest[key].as_str().unwrap().is_empty(), "{key}");
    }
    assert_eq!(
        (manifest["device"].as_str(), manifest["dtype"].as_str()),
        (Some("cpu"), Some("fp32"))
    );
    let models = manifest["models"].as_array().unwrap();
    assert_eq!(models.len(), 5, "pipeline, two adapters, encoder, scorer");
    for m in models {
        for f in m["files"].as_array().unwrap() {
            assert_eq!(f["sha256"].as_str().unwrap().len(), 64);
            assert!(f["size"].as_u64().unwrap() > 0);
        }
    }

    // The summary pairs every condition with its negative=none baseline; 2 seeds: unreliable.
    let ids = negimg::scoring::scorers(&run).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let sdir = negimg::scoring::scorer_dir(&run, &ids[0]);
    let mut reader = csv::Reader::from_path(sdir.join("summary.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "clip_i_neg_diff",
        "clip_i_neg_diff_ci_lo",
        "clip_i_neg_p_holm",
        "clip_i_neg_win_rate",
        "clip_i_pos_p_holm",
        "dino_i_neg_p_holm",
        "ssim_base_mean",
        "clip_div_mean",
        "unreliable",
    ] {
        if col.starts_with("dino") {
            assert!(
                !header.contains(&col.to_string()),
                "no DINO model in smoke.toml"
            );
            continue;
        }
        assert!(header.contains(&col.to_string()), "summary.csv has {col}");
    }
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 24, "adapter x negative x weight");
    assert!(rows.iter().all(|r| &r[at("unreliable")] == "true"));
    let paired = rows
        .iter()
        .filter(|r| &r[at("baseline")] == "false")
        .filter(|r| !r[at("clip_i_neg_p_holm")].is_empty())
        .count();
    assert_eq!(paired, 18, "every non-baseline condition has a Holm p");
    let html = std::fs::read_to_string(run.join("index.html")).unwrap();
    let verdict = html.find("<h2>Verdict</h2>").expect("verdict table");
    assert!(
        verdict < html.find("<h2>Grids</h2>").unwrap(),
        "the report opens with it"
    );
    assert!(html.contains("2 seeds: unreliable"));
    assert!(sdir.join("verdict.csv").is_file() && sdir.join("verdict.tex").is_file());

    // Each PNG carries its parameters, A1111-style and as JSON.
    let first = run.join(&records[0].file);
    let texts = negimg::run::png::read_texts(&first).unwrap();
    let params = &texts.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        params.starts_with("a house\nSteps: 4, Sampler: DDIM"),
        "{params}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&texts.iter().find(|(k, _)| k == "negimg").unwrap().1).unwrap();
    assert_eq!(json["cell_id"], records[0].cell_id.as_str());
    assert_eq!(json["params"]["seed"], 1);

    let before = images(&run);
    assert_eq!(before.len(), 48);
    let out = common::negimg(&["--device", "cpu", "run", "experiments/smoke.toml"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 made now, 48 kept from before"), "{text}");
    assert_eq!(images(&run), before, "images rewritten");
}

#[test]
fn shipped_experiments_pass_plan_checks() {
    let dir = common::repo().join("experiments");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    for expected in [
        "adapters.toml",
        "faces.toml",
        "smoke.toml",
        "street.toml",
        "text-vs-image.toml",
        "winter.toml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        // Parse and check everything but the hf: models, which are not on this machine:
        // they are replaced by init_random paths for the check.
        let local = text.lines().map(|l| {
            if l.trim_start().starts_with("init_random") {
                String::new()
            } else {
                l.replace("hf:", "fake-hf/")
            }
        });
        let mut local: String = local.collect::<Vec<_>>().join("\n");
        local = local.replace(
            "[models]",
            "[models]\ninit_random = { preset = \"tiny\", dir = \".\" }",
        );
        let e = negimg::experiment::parse(&dir.join(&name), local, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        // A bound that catches a runaway grid; subjects.toml (13 subjects × methods × 8
        // seeds) is the largest shipped file.
        assert!(
            !e.cells.is_empty() && e.cells.len() <= 4000,
            "{name}: {} cells",
            e.cells.len()
        );
        assert!(!e.images.is_empty(), "{name}: input images by generate");
    }
}
