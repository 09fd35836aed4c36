//! `negimg run experiments/controls-tiny.toml` (tiny random models): derived images are
//! written to inputs/ as the derive module computes them from their sources, cached, recorded
//! in the manifest with their recipes and captioned in run.json; a second run makes nothing.
mod common;

use negimg::derive::NoiseKind;
use negimg::derive::noise::derive;
use negimg::experiment::{self, ImageSource, LoadOptions};
use negimg::run::records::{Status, read_records};

#[test]
fn controls_tiny_runs_with_every_kind_and_reruns_from_the_cache() {
    let (dir, run) = common::run_copied_experiment("derive_run", "controls-tiny", 17);
    let file = dir.join("experiments/controls-tiny.toml");
    let records = read_records(&run.join("records.csv")).unwrap();
    assert_eq!(records.len(), 17);
    assert!(records.iter().all(|r| r.status == Status::Done));
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.cell_id).collect();
    assert_eq!(ids.len(), 17, "every derived negative is its own cell");

    // Each derived image is the module's image of its source as written in inputs/.
    let exp = experiment::load(&file, &LoadOptions::default()).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for (name, source) in &exp.images {
        let ImageSource::Derive(recipe) = source else {
            continue;
        };
        kinds.insert(recipe.noise);
        let src = recipe
            .from
            .as_ref()
            .map(|f| negimg::images::load_rgb(&run.join(format!("inputs/{f}.png"))).unwrap());
        let written = negimg::images::load_rgb(&run.join(format!("inputs/{name}.png"))).unwrap();
        assert_eq!(written.dimensions(), (224, 224));
        assert!(written == derive(src.as_ref(), recipe).unwrap(), "{name}");
    }
    assert_eq!(kinds.len(), NoiseKind::ALL.len(), "every kind runs");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let fade = &manifest["derived"]["house_fade@1"];
    assert_eq!(fade["noise"], "fade");
    assert_eq!(fade["strength"], 1.0);
    assert_eq!(fade["blur"], 4);
    assert_eq!(fade["from"], "house");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["captions"]["house_fade@1"], "fade 1 of house, blur 4");
    assert_eq!(info["captions"]["black_noise"], "gaussian 0.5 of black");
    let cached = std::fs::read_dir(dir.join("results/.cache/inputs"))
        .unwrap()
        .count();
    assert!(
        cached >= 2 + 15,
        "text-to-image and derived inputs cached: {cached}"
    );

    // From the cache: nothing made again, the same inputs.
    let before = std::fs::read(run.join("inputs/house_shuffle@0.png")).unwrap();
    std::fs::remove_file(run.join("inputs/house_shuffle@0.png")).unwrap();
    let out = common::negimg(
        &["--device", "cpu", "run", "experiments/controls-tiny.toml"],
        &dir,
    );
    let text = common::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 made now, 17 kept from before"), "{text}");
    assert_eq!(
        std::fs::read(run.join("inputs/house_shuffle@0.png")).unwrap(),
        before
    );
}
