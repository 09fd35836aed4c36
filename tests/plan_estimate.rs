//! `negimg plan`'s time estimate against the run it estimates: without an earlier run it
//! calibrates on the spot and comes within 2x of the generation time the run records, at
//! two sizes; for a GPU it cannot see it still estimates, from FLOP figures, and says so.
mod common;

use negimg::run::records::{Status, read_records};
use std::collections::BTreeMap;
use std::path::Path;

/// An experiment on the tiny models: `seeds` cells at `size`, each with a positive image.
fn write_experiment(dir: &Path, name: &str, size: usize, steps: usize, seeds: usize) {
    let m = common::tiny::tiny_models();
    let m = m.display();
    let text = format!(
        r#"[experiment]
name = "{name}"
[models]
pipeline = "{m}/pipeline"
ip_adapter = {{ base = "{m}/ip-adapter_sd15.safetensors" }}
image_encoder = "{m}/image_encoder"
[images.house]
path = "house.png"
[defaults]
dtype = "fp32"
size = {size}
steps = {steps}
seeds = {{ count = {seeds}, base = 1 }}
positive_image = "house"
"#
    );
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

fn run_ok(args: &[&str], dir: &Path) -> String {
    let out = common::negimg(args, dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "negimg {args:?} failed:\n{text}");
    text
}

/// The `estimate on ...` line of plan's output and its seconds per image.
fn estimate_line(plan: &str) -> (String, f64) {
    let line = plan
        .lines()
        .find(|l| l.starts_with("estimate on "))
        .unwrap_or_else(|| panic!("no estimate in:\n{plan}"))
        .to_string();
    let per_image = line
        .split_once(" s per image")
        .and_then(|(before, _)| before.rsplit('(').next())
        .and_then(|x| x.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no seconds per image in: {line}"));
    (line, per_image)
}

/// Seconds of generation the run recorded: each image's share of its batch, once per file.
fn generation_seconds(run_root: &Path) -> (f64, usize) {
    let run = std::fs::read_dir(run_root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("records.csv").is_file())
        .expect("a run folder");
    let records = read_records(&run.join("records.csv")).unwrap();
    assert!(records.iter().all(|r| r.status == Status::Done));
    let per_file: BTreeMap<String, f64> = records
        .iter()
        .map(|r| (r.file.clone(), r.seconds))
        .collect();
    (per_file.values().sum(), per_file.len())
}

#[test]
fn a_calibrated_estimate_is_within_2x_of_the_run_at_two_sizes() {
    let dir = common::scratch("plan_estimate");
    image::RgbImage::from_fn(64, 64, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])
    })
    .save(dir.join("house.png"))
    .unwrap();
    for (name, size) in [("small", 32), ("large", 64)] {
        write_experiment(&dir, name, size, 4, 4);
        let file = format!("{name}.toml");
        let plan = run_ok(&["--device", "cpu", "plan", &file], &dir);
        let (line, per_image) = estimate_line(&plan);
        assert!(
            line.contains("calibrated on the spot") && line.contains(&format!("at {size}x{size}")),
            "{line}"
        );
        run_ok(&["--device", "cpu", "run", &file], &dir);
        let (measured, images) = generation_seconds(&dir.join("results").join(name));
        let estimated = per_image * images as f64;
        let ratio = estimated / measured;
        eprintln!("{name}: estimated {estimated:.3} s, measured {measured:.3} s ({line})");
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{size}px: estimated {estimated:.3} s, the run took {measured:.3} s: {line}"
        );
        // With that run as history, the estimate is the run's own figure.
        let again = run_ok(&["--device", "cpu", "plan", &file], &dir);
        let (line, per_image) = estimate_line(&again);
        assert!(line.contains("measured by run"), "{line}");
        let relative = (per_image * images as f64 - measured).abs() / measured;
        assert!(relative < 0.01, "{line}: {measured}");
    }
}

#[test]
fn plan_for_a_gpu_that_is_not_here_estimates_from_flop_figures() {
    if tch::Cuda::is_available() {
        // Here the GPU is visible and gets calibrated instead.
        return;
    }
    let dir = common::scratch("plan_estimate_cuda");
    image::RgbImage::new(64, 64)
        .save(dir.join("house.png"))
        .unwrap();
    write_experiment(&dir, "gpu", 64, 4, 2);
    let plan = run_ok(&["--device", "cuda", "plan", "gpu.toml"], &dir);
    let (line, per_image) = estimate_line(&plan);
    assert!(
        line.starts_with("estimate on cuda:0 fp32")
            && line.contains("FLOP-based estimate, not measured")
            && line.contains("cuda:0 is not visible here")
            && line.contains("assumed H200"),
        "{line}"
    );
    assert!(per_image > 0.0 && per_image.is_finite(), "{line}");
    // `run` still refuses the missing GPU.
    let out = common::negimg(&["--device", "cuda", "run", "gpu.toml"], &dir);
    assert!(!out.status.success());
}
