//! `negimg plan` and `negimg run` of experiments/blocks-tiny.toml (tiny random models with
//! SD1.5's 16-block layout, offline): every block preset, a list and every ip_scaling are
//! planned and made, and records.csv names each cell's values.
mod common;

use negimg::params::{BlockWeights, IpScaling};
use negimg::run::records::{Status, read_records};

#[test]
fn blocks_tiny_runs_every_preset_and_ip_scaling_and_records_them() {
    let (dir, run) = common::run_copied_experiment("run_blocks", "blocks-tiny", 40);
    let plan = common::plan("experiments/blocks-tiny.toml", &dir);
    for v in [
        "neg_blocks=style",
        "neg_blocks=composition",
        "neg_blocks=strong_style",
        "neg_blocks=6:1, 12:0.5",
        "blocks=strong_style",
        "ip_scaling=k_mean_v_c",
    ] {
        assert!(plan.contains(v), "plan lists {v}:\n{plan}");
    }
    for s in ["v", "kv", "kv_c", "k_mean_v_c"] {
        assert!(
            plan.contains(&format!(
                "10 cells: 3 steps 32x32 ddim base ip_scaling={s}\n"
            )),
            "one batch group per ip_scaling:\n{plan}"
        );
    }
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(records.iter().all(|r| r.status == Status::Done));
    let list: BlockWeights = "6:1, 12:0.5".parse().unwrap();
    for b in [
        BlockWeights::All,
        BlockWeights::Style,
        BlockWeights::Composition,
        BlockWeights::StrongStyle,
        list,
    ] {
        assert_eq!(
            records.iter().filter(|r| r.neg_blocks == b).count(),
            8,
            "{b}"
        );
    }
    for s in [
        IpScaling::V,
        IpScaling::Kv,
        IpScaling::KvC,
        IpScaling::KMeanVC,
    ] {
        assert_eq!(
            records.iter().filter(|r| r.ip_scaling == s).count(),
            10,
            "{s}"
        );
    }
    let strong = records
        .iter()
        .filter(|r| r.blocks == BlockWeights::StrongStyle)
        .count();
    assert_eq!(strong, 20);
    // Every cell is its own image: the values reach the cell ids.
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.cell_id).collect();
    assert_eq!(ids.len(), 40);
}

/// `negimg plan` reads the UNet config when the models are on disk: a preset on the tiny
/// models' 6-block layout fails there, naming the block count, before any run.
#[test]
fn plan_refuses_presets_on_another_block_layout() {
    let dir = common::scratch("run_blocks_plan");
    let models = common::tiny::tiny_models();
    let text = std::fs::read_to_string(common::repo().join("experiments/blocks-tiny.toml"))
        .unwrap()
        .replace("../models/tiny_sd15", models.to_str().unwrap())
        .replace("preset = \"tiny_sd15\"", "preset = \"tiny\"");
    std::fs::write(dir.join("b.toml"), text).unwrap();
    let out = common::negimg(&["--device", "cpu", "plan", "b.toml"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("b.toml") && err.contains("has 6 cross-attention blocks"),
        "{err}"
    );
}
