//! `window` through a whole run on tiny random models (offline): `negimg plan` prints the
//! steps each rule makes active, records.csv and the PNG chunks name the rule, the sigma
//! cells get their own ids (the steps cells keep the ids they had before `window` existed),
//! run.json and the report label the axis; a negative weight runs too.
mod common;

use negimg::params::Window;
use negimg::run::png::read_texts;
use negimg::run::records::{Status, read_records};

fn experiment(models: &std::path::Path) -> String {
    let m = models.display();
    let models = common::tiny::models_toml(models);
    format!(
        r#"
[experiment]
name = "window-tiny"
description = "Tiny random models: the steps and sigma window rules."

{models}scorer = "{m}/scorer"

[images.house]
generate = {{ prompt = "a house with a green lawn", seed = 1 }}

[images.lawn]
generate = {{ prompt = "a green lawn", seed = 2 }}

[defaults]
steps = 4
size = 32
dtype = "fp32"
seed = 3
positive_image = "house"
negative_image = "lawn"
start = 0.3
scheduler = "dpmpp_2m_karras"

[grid]
window = ["steps", "sigma"]
neg_weight = [-0.5, 1]

[scoring]
targets = ["a house in winter"]
positive_reference = "house"
negative_reference = "lawn"

[plots]
rows = "window"
cols = "neg_weight"
"#
    )
}

#[test]
fn window_runs_through_plan_records_png_chunks_ids_and_report() {
    let dir = common::scratch("run_window");
    let exp = dir.join("window-tiny.toml");
    std::fs::write(&exp, experiment(&common::tiny::tiny_models())).unwrap();
    let exp = exp.to_str().unwrap();
    let plan = common::plan(exp, &dir);
    assert!(plan.contains("window=sigma neg_weight=-0.5"), "{plan}");
    // start 0.3 with 4 Karras steps: steps 2-3 by the step count, 1-3 by sigma.
    assert!(
        plan.contains("| dpmpp_2m_karras | 4 | 0.3-1 | 2-3 | 1-3 | yes |"),
        "{plan}"
    );
    let out = common::negimg(&["--device", "cpu", "run", exp], &dir);
    assert!(out.status.success(), "{}", common::text(&out));
    let run = common::only_run(&dir.join("results/window-tiny"));
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.status == Status::Done));
    let csv = std::fs::read_to_string(run.join("records.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains(",window,"), "{csv}");
    for r in &records {
        let chunks = read_texts(&run.join(&r.file)).unwrap();
        let get = |k: &str| chunks.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert!(
            get("parameters").contains(&format!("Window rule: {}", r.window)),
            "{}",
            get("parameters")
        );
        let json: serde_json::Value = serde_json::from_str(&get("negimg")).unwrap();
        let params = json.get("params").unwrap_or(&json);
        match r.window {
            Window::Sigma => assert_eq!(params["window"], "sigma", "{json}"),
            Window::Steps => assert!(params.get("window").is_none(), "{json}"),
        }
    }
    let ids: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.cell_id.as_str()).collect();
    assert_eq!(ids.len(), 4, "every cell its own id");
    let run_json = std::fs::read_to_string(run.join("run.json")).unwrap();
    assert!(run_json.contains("\"window\""), "{run_json}");
    // The report's score table has a window column with both rules.
    let index = std::fs::read_to_string(run.join("index.html")).unwrap();
    assert!(
        index.contains("<tr><th>window</th><th>neg_weight</th>"),
        "{index}"
    );
    for row in ["steps", "sigma"] {
        let cells = format!("<tr><td class=k>{row}</td><td class=k>-0.5</td>");
        assert!(index.contains(&cells), "no {row} row in the report");
    }
}
