//! `negimg plan` and `negimg run` of experiments/methods-tiny.toml (tiny random models,
//! offline): every method is planned and made (dng zipped with euler_ancestral), and
//! records.csv names each cell's method.
mod common;

use negimg::params::Method;
use negimg::run::records::{Status, read_records};

#[test]
fn methods_tiny_runs_every_method_and_records_it() {
    let (dir, run) = common::run_copied_experiment("run_methods", "methods-tiny", 72);
    let plan = common::plan("experiments/methods-tiny.toml", &dir);
    for m in [
        "method=uncond",
        "method=subtract",
        "method=three_branch",
        "method=perp_neg",
        "method=negtome",
        "method=cond_negative",
        "method=sega",
        "method=dng scheduler=euler_ancestral",
        "method=nag",
    ] {
        assert!(plan.contains(m), "plan lists {m}:\n{plan}");
    }
    // At negative = none only uncond has a meaning: the other methods' 32 cells there are
    // made as it (README, "A method with nothing to subtract"), so 16 cells take 3 rows.
    assert!(
        plan.contains("16 cells take 3 (three_branch, perp_neg, sega, dng), 56 take 2"),
        "{plan}"
    );
    assert!(
        plan.contains("32 cells have nothing for their method to subtract"),
        "{plan}"
    );
    assert!(
        plan.contains("attention work beyond the rows, in UNet rows per step: 4 nag cells"),
        "{plan}"
    );
    // The negtome cells with a negative image merge (at the first of the 3 steps).
    assert!(
        plan.contains("NegToMe: 4 cells merge against 1 reference image(s): 1 more UNet row(s)"),
        "{plan}"
    );
    assert!(!plan.contains("never merge"), "{plan}");
    // Keys a cell's method does not read are named with their line, per method.
    let unused = "methods-tiny.toml:31 (defaults.neg_cfg): method uncond does not use neg_cfg \
                  (8 of 72 cells)";
    assert!(plan.contains(unused), "{plan}");
    assert!(
        !plan.contains("method perp_neg does not use neg_cfg"),
        "{plan}"
    );
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(records.iter().all(|r| r.status == Status::Done));
    for m in [
        Method::Uncond,
        Method::Subtract,
        Method::ThreeBranch,
        Method::PerpNeg,
        Method::Negtome,
        Method::CondNegative,
        Method::Sega,
        Method::Dng,
        Method::Nag,
    ] {
        assert_eq!(records.iter().filter(|r| r.method == m).count(), 8, "{m}");
    }
    assert!(records.iter().all(|r| r.neg_cfg == Some(5.0)));
    // Per zip row, seed and scheduler (dng's cells run euler_ancestral), the methods'
    // negative = none cells share one image file.
    let none_files: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.negative == negimg::params::NegativeMode::None)
        .map(|r| r.file.as_str())
        .collect();
    assert_eq!(none_files.len(), 8, "{none_files:?}");
    let mut scales: Vec<f64> = records.iter().map(|r| r.neg_embed_scale).collect();
    scales.dedup();
    assert!(scales.contains(&0.5) && scales.contains(&1.0));
}
