//! NegToMe end to end on the tiny models: `negimg plan` and `negimg run` of
//! experiments/negtome-tiny.toml (records, PNG chunks, the merge's cost in the plan),
//! `negimg generate --method negtome` (the library's image), `negimg bench --method negtome`.
mod common;

use common::text;
use negimg::params::{GenParams, Method, NegativeMode};
use negimg::run::records::{Status, read_records};

#[test]
fn negtome_tiny_experiment_plans_runs_and_records_the_merge() {
    let (dir, run) = common::run_copied_experiment("run_negtome", "negtome-tiny", 6);
    let plan = common::plan("experiments/negtome-tiny.toml", &dir);
    assert!(plan.contains("method=negtome"), "{plan}");
    // 4 merging cells, one reference image; DDIM's 3 steps are at 667, 334, 1 and the range
    // starts at 300: one reference row at 2 steps.
    assert!(
        plan.contains("NegToMe: 4 cells merge against 1 reference image(s): 2 more UNet row(s)"),
        "{plan}"
    );
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(records.iter().all(|r| r.status == Status::Done));
    assert_eq!(
        records
            .iter()
            .filter(|r| r.method == Method::Negtome)
            .count(),
        2
    );
    assert_eq!(records.iter().filter(|r| r.negtome).count(), 2);
    assert!(records.iter().all(|r| r.negtome_t_min == 300.0));
    let image = |method: Method, negtome: bool, threshold: f64| {
        let r = records
            .iter()
            .find(|r| {
                r.method == method && r.negtome == negtome && r.negtome_threshold == threshold
            })
            .unwrap();
        image::open(run.join(&r.file)).unwrap().to_rgb8()
    };
    // The threshold matters where the merge is on, and only there.
    assert_ne!(
        image(Method::Negtome, false, 0.5),
        image(Method::Negtome, false, 0.8)
    );
    assert_ne!(
        image(Method::Uncond, true, 0.5),
        image(Method::Uncond, true, 0.8)
    );
    assert_eq!(
        image(Method::Uncond, false, 0.5),
        image(Method::Uncond, false, 0.8)
    );
    let merged = records.iter().find(|r| r.negtome).unwrap();
    let texts = negimg::run::png::read_texts(&run.join(&merged.file)).unwrap();
    assert!(
        texts.iter().any(|(k, v)| k == "parameters"
            && v.contains("NegToMe: on, NegToMe alpha: 0.9, NegToMe threshold: ")
            && v.contains("NegToMe timesteps: 300-1000")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|(k, v)| k == "negimg" && v.contains("\"negtome\":true")),
        "{texts:?}"
    );
}

#[test]
fn negtome_generate_flags_make_the_library_image() {
    let dir = common::scratch("run_negtome_generate");
    let models = common::tiny::tiny_models();
    let neg = dir.join("neg.png");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([20, (x * 4) as u8, (y * 4) as u8])
    })
    .save(&neg)
    .unwrap();
    let out = dir.join("out.png");
    let args = [
        "--negative",
        neg.to_str().unwrap(),
        "--prompt",
        "a house",
        "--method",
        "negtome",
        "--negtome-alpha",
        "0.7",
        "--negtome-threshold",
        "0.6",
        "--negtome-t-min",
        "0",
        "--steps",
        "2",
        "--size",
        "64",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = common::negimg_generate(&models, &args, &dir);
    assert!(run.status.success(), "{}", text(&run));
    let written = image::open(&out).unwrap().to_rgb8();
    let mut cell = GenParams::new(0);
    cell.prompt = "a house".into();
    cell.negative_image = Some(neg.clone());
    cell.negative = NegativeMode::Image;
    cell.method = Method::Negtome;
    cell.negtome_alpha = 0.7;
    cell.negtome_threshold = 0.6;
    cell.negtome_t_min = 0.0;
    cell.steps = 2;
    cell.width = 64;
    cell.height = 64;
    assert_eq!(written, common::library_image(&models, cell));
    let bad = common::negimg_generate(&models, &["--negtome"], &dir);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("needs --negative IMAGE"),
        "{}",
        text(&bad)
    );
    let bad = common::negimg_generate(
        &models,
        &[
            "--negative",
            neg.to_str().unwrap(),
            "--negtome-threshold",
            "2",
        ],
        &dir,
    );
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--negtome-threshold"), "{}", text(&bad));
}

#[test]
fn negtome_bench_counts_the_reference_rows() {
    let dir = common::scratch("run_negtome_bench");
    let bench = |method: &str| {
        let out = common::negimg(
            &[
                "--device", "cpu", "bench", "--preset", "tiny", "--steps", "5", "--reps", "1",
                "--method", method,
            ],
            &dir,
        );
        assert!(out.status.success(), "{}", text(&out));
        let line: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        line
    };
    let plain = bench("uncond");
    let negtome = bench("negtome");
    assert_eq!(negtome["method"], "negtome");
    // DDIM 5 steps: t = 801, 601, ...; the default range 800-1000 takes the first.
    assert_eq!(plain["unet_rows_per_image"], 10.0);
    assert_eq!(negtome["unet_rows_per_image"], 11.0);
}
