//! Patch-token change maps (CLIP and DINOv2, README "Change maps") against transformers run
//! at test time on tiny random encoders, and the luma change maps of x̂₀ traces against
//! numpy (tests/reference/patch_change_ref.py, one call), with their guards: zero for
//! identical images, nonzero and unlike the luma map where the images differ, none
//! without a baseline, and heat-map pictures from the report.
mod common;
mod scoring_fixture;

use image::{Rgb, RgbImage};
use negimg::models::clip_model::{self, ClipConfig};
use negimg::models::dinov2::{self, Dinov2Config};
use negimg::models::tokenizer::find_open_clip_vocab;
use negimg::params::NegativeMode;
use negimg::run::records::write_records;
use negimg::scoring::embed::ImageModel;
use negimg::scoring::metrics::Embedder;
use negimg::scoring::patch_change::token_distances;
use negimg::scoring::{change_map_file, score_with, trace_change_file};
use serde_json::{Value, json};
use std::path::Path;
use tch::{Device, Kind};

const MODES: [NegativeMode; 3] = [NegativeMode::None, NegativeMode::Image, NegativeMode::Text];
const TRACED: [usize; 2] = [0, 2];

/// The x̂₀ of `step` of an image: the image darkened and shifted, unlike per step.
fn write_traces(dir: &Path, file: &str, step_shift: u8) {
    let img = image::open(dir.join(file)).unwrap().to_rgb8();
    let id = Path::new(file).file_stem().unwrap().to_string_lossy();
    for step in TRACED {
        let shift = step_shift.wrapping_mul(step as u8 + 1);
        let trace = RgbImage::from_fn(img.width(), img.height(), |x, y| {
            let p = img.get_pixel((x + step as u32) % img.width(), y);
            Rgb(p.0.map(|c| (c / 2).wrapping_add(shift)))
        });
        let path = dir.join(negimg::run::layout::trace_file(&id, step));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        trace.save(path).unwrap();
    }
}

/// Our grid of `1 − cos` for one pair, as the scorer computes it.
fn our_grid(model: &ImageModel, image: &Path, base: &Path) -> Vec<Vec<f64>> {
    let imgs = [image, base].map(|p| image::open(p).unwrap().to_rgb8());
    let pixels = model.preprocess().batch(&imgs, Device::Cpu, Kind::Float);
    let tokens = model.patch_tokens(&pixels);
    let grid = token_distances(&tokens.get(0), &tokens.get(1)).unwrap();
    Vec::<Vec<f64>>::try_from(&grid).unwrap()
}

fn values(path: &Path) -> Vec<f32> {
    negimg::npy::read(path).unwrap().2
}

#[test]
fn patch_change_map_and_trace_change_map_match_transformers_and_numpy() {
    let dir = common::scratch("patch_change_maps");
    let models = common::scratch("patch_change_maps_models");
    let (clip_dir, dino_dir) = (models.join("clip"), models.join("dino"));
    clip_model::write_random_model(
        &clip_dir,
        &ClipConfig::tiny(),
        3,
        &find_open_clip_vocab().unwrap(),
    )
    .unwrap();
    dinov2::write_random_model(&dino_dir, &Dinov2Config::tiny(), 4).unwrap();

    let mut fx = scoring_fixture::write_run(&dir, &[1.0], &MODES, &[1, 2], None, true);
    // c022 (text, seed 2) is its baseline c002's image again: a zero map.
    std::fs::copy(dir.join("images/c002.png"), dir.join("images/c022.png")).unwrap();
    // Traces at steps 0 and 2 for every cell but c021 (its baseline's are compared only
    // where both have them).
    for (i, r) in fx.records.iter_mut().enumerate() {
        if r.cell_id != "c021" {
            r.trace = Some("0, 2".parse().unwrap());
            write_traces(&dir, &r.file, 7 * i as u8);
        }
    }
    write_records(&dir.join("records.csv"), &fx.records).unwrap();

    score_with(
        &dir,
        Embedder::Clip,
        &clip_dir,
        None,
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    score_with(
        &dir,
        Embedder::Dino,
        &dino_dir,
        None,
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    negimg::report::plot_run(&dir).unwrap();

    let encoders = [(Embedder::Clip, &clip_dir), (Embedder::Dino, &dino_dir)];
    let mut patch = Vec::new();
    let mut grids = Vec::new();
    let mut luma = Vec::new();
    for e in encoders {
        let model = ImageModel::load(e.0, e.1, Device::Cpu, Kind::Float).unwrap();
        for (i, r) in fx.records.iter().enumerate() {
            let base = &fx.records[i % 2];
            let npy = change_map_file(&dir, &r.cell_id, e.0.prefix());
            assert!(npy.is_file(), "{}", npy.display());
            assert!(npy.with_extension("png").is_file(), "the report draws it");
            let (image, baseline) = (dir.join(&r.file), dir.join(&base.file));
            grids.push((r.cell_id.clone(), our_grid(&model, &image, &baseline)));
            patch.push(json!({
                "encoder": e.0.prefix(), "model": e.1, "image": image, "baseline": baseline,
                "npy": npy,
            }));
        }
    }
    for (i, r) in fx.records.iter().enumerate() {
        let base = &fx.records[i % 2];
        for step in TRACED {
            let npy = trace_change_file(&dir, &r.cell_id, step);
            if r.cell_id == "c021" {
                assert!(!npy.exists(), "c021 has no traces");
                continue;
            }
            assert!(npy.with_extension("png").is_file(), "{}", npy.display());
            let trace = |rec: &negimg::run::records::Record| {
                let id = Path::new(&rec.file)
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                dir.join(negimg::run::layout::trace_file(&id, step))
            };
            luma.push(json!({"image": trace(r), "baseline": trace(base), "npy": npy}));
        }
        assert!(
            !trace_change_file(&dir, &r.cell_id, 1).exists(),
            "step 1 is not traced"
        );
    }
    let cases = dir.join("cases.json");
    let out = dir.join("reference.json");
    std::fs::write(&cases, json!({"patch": patch, "luma": luma}).to_string()).unwrap();
    common::run_python(
        "patch_change_ref.py",
        &[cases.to_str().unwrap(), out.to_str().unwrap()],
    );
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();

    let mut worst = (0.0f64, 0.0f64);
    for ((id, ours), want) in grids.iter().zip(reference["patch"].as_array().unwrap()) {
        let want_grid: Vec<Vec<f64>> = serde_json::from_value(want["grid"].clone()).unwrap();
        assert_eq!(ours.len(), 16, "{id}: 224 px in 14 px patches");
        assert_eq!(want_grid.len(), ours.len(), "{id}");
        for (a, b) in ours.iter().flatten().zip(want_grid.iter().flatten()) {
            worst.0 = worst.0.max((a - b).abs());
        }
        let map_diff = want["map_max_diff"].as_f64().unwrap();
        worst.1 = worst.1.max(map_diff);
        assert_eq!(want["shape"], json!([32, 48]), "{id}: the image's size");
        let max = want["max"].as_f64().unwrap();
        if id == "c022" {
            // Another file with the baseline's pixels, in another row of the batch.
            assert!(max < 1e-6, "{id}: equal images, max {max}");
        } else if !id.starts_with("c00") {
            assert!(max > 1e-4, "{id}: differs from its baseline, max {max}");
        }
    }
    // A baseline against itself: exactly zero inside the crop.
    for e in ["clip", "dino"] {
        for id in ["c001", "c002"] {
            let map = values(&change_map_file(&dir, id, e));
            assert!(map.contains(&0.0), "{id} {e}");
            assert!(map.iter().all(|v| v.is_nan() || *v == 0.0), "{id} {e}");
        }
    }
    assert!(
        worst.0 < 1e-5,
        "grids differ from transformers by {}",
        worst.0
    );
    assert!(
        worst.1 < 1e-5,
        "upsampled maps differ from torch by {}",
        worst.1
    );
    // CLIP sees the whole height of the 48x32 images; DINOv2 crops 224 of 256.
    let crops: Vec<&Value> = reference["patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["crop"])
        .collect();
    assert_eq!(crops[0], &json!([8, 0, 32]));
    assert_eq!(crops[MODES.len() * 2], &json!([10, 2, 28]));
    for want in reference["luma"].as_array().unwrap() {
        assert_eq!(want["shape"], json!([32, 48]));
        assert!(want["max_diff"].as_f64().unwrap() < 1e-6, "{want}");
    }
    println!(
        "patch grids vs transformers: {:e}; upsampled vs torch: {:e}; {} trace maps",
        worst.0,
        worst.1,
        reference["luma"].as_array().unwrap().len()
    );

    // Not the luma map: the patch map of a changed cell has another spread.
    let (luma_map, clip_map) = (
        values(&change_map_file(&dir, "c011", "luma")),
        values(&change_map_file(&dir, "c011", "clip")),
    );
    let differ = luma_map
        .iter()
        .zip(&clip_map)
        .filter(|(a, b)| !b.is_nan() && (*a - *b).abs() > 1e-3)
        .count();
    assert!(differ > 100, "{differ} pixels differ from the luma map");
}

#[test]
fn patch_change_map_is_not_written_without_a_baseline() {
    let dir = common::scratch("patch_change_maps_no_baseline");
    let models = common::scratch("patch_change_maps_no_baseline_model");
    dinov2::write_random_model(&models, &Dinov2Config::tiny(), 4).unwrap();
    let fx = scoring_fixture::write_run(&dir, &[1.0], &[NegativeMode::Image], &[1], None, true);
    score_with(
        &dir,
        Embedder::Dino,
        &models,
        None,
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let id = &fx.records[0].cell_id;
    assert!(!change_map_file(&dir, id, "dino").exists());
    assert!(!dir.join("maps").exists());
}
