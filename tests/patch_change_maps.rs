//! Patch-token change maps (CLIP and DINOv2, README "Change maps") against transformers run
//! at test time on tiny random encoders, their scores.csv scalars (entropy, region shares)
//! and the luma change maps of x̂₀ traces against numpy (tests/reference/patch_change_ref.py,
//! one call), with their guards: zero for identical images, nonzero and unlike the luma map
//! where the images differ, none without a baseline, one file per scorer (two CLIP
//! scorers keep both; a grid shows the first by id), and heat-map pictures from the report.
mod common;
mod scoring_fixture;

use image::{Rgb, RgbImage};
use negimg::models::clip_model::{self, ClipConfig};
use negimg::models::dinov2::{self, Dinov2Config};
use negimg::models::tokenizer::find_open_clip_vocab;
use negimg::params::NegativeMode;
use negimg::report::maps::{MapKind, Picture};
use negimg::run::records::write_records;
use negimg::scoring::embed::ImageModel;
use negimg::scoring::metrics::Embedder;
use negimg::scoring::patch_change::token_distances;
use negimg::scoring::{
    change_map_file, patch_change_file, patch_change_files, score_with, trace_change_file,
};
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
    // A second CLIP scorer (other weights): its own maps beside the first's.
    let clip2_dir = models.join("clip2");
    clip_model::write_random_model(
        &clip2_dir,
        &ClipConfig::tiny(),
        5,
        &find_open_clip_vocab().unwrap(),
    )
    .unwrap();

    let mut fx = scoring_fixture::write_run(&dir, &[1.0], &MODES, &[1, 2], None, true);
    // A region (not aligned with the patches) for the scalars' shares.
    let mask = dir.join("region.png");
    RgbImage::from_fn(20, 12, |x, y| {
        if x < 7 || (x + 20 - y) % 5 == 0 {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    })
    .save(&mask)
    .unwrap();
    fx.info.scoring.region = Some(mask.clone());
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string(&fx.info).unwrap(),
    )
    .unwrap();
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

    let score = |e: Embedder, model: &Path| {
        score_with(&dir, e, model, None, Device::Cpu, Kind::Float).unwrap()
    };
    let clip_id = score(Embedder::Clip, &clip_dir);
    let dino_id = score(Embedder::Dino, &dino_dir);
    let clip2_id = score(Embedder::Clip, &clip2_dir);
    negimg::report::plot_run(&dir).unwrap();

    let encoders = [
        (Embedder::Clip, &clip_dir, &clip_id),
        (Embedder::Dino, &dino_dir, &dino_id),
        (Embedder::Clip, &clip2_dir, &clip2_id),
    ];
    let mut scalars = Vec::new();
    let mut patch = Vec::new();
    let mut grids = Vec::new();
    let mut luma = Vec::new();
    for e in encoders {
        let model = ImageModel::load(e.0, e.1, Device::Cpu, Kind::Float).unwrap();
        for (i, r) in fx.records.iter().enumerate() {
            let base = &fx.records[i % 2];
            let npy = patch_change_file(&dir, &r.cell_id, e.0, e.2);
            assert!(npy.is_file(), "{}", npy.display());
            let table = negimg::scoring::scorer_dir(&dir, e.2).join("scores.csv");
            let table = negimg::scoring::read_scores(&table).unwrap();
            let column = |name: &str| table.metrics.iter().position(|m| m == name).unwrap();
            let row = &table.values[&r.cell_id];
            let (entropy, inside, outside) = (
                row[column("patch_change_entropy")],
                row[column("patch_change_in_region")],
                row[column("patch_change_out_region")],
            );
            assert!(inside.is_nan() || (inside + outside - 1.0).abs() < 1e-12);
            scalars.push((r.cell_id.clone(), entropy, inside));
            assert!(npy.with_extension("png").is_file(), "the report draws it");
            let (image, baseline) = (dir.join(&r.file), dir.join(&base.file));
            grids.push((r.cell_id.clone(), our_grid(&model, &image, &baseline)));
            patch.push(json!({
                "encoder": e.0.prefix(), "model": e.1, "image": image, "baseline": baseline,
                "npy": npy, "mask": mask,
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
    let close = |a: f64, b: &Value| match b.as_f64() {
        Some(b) => (a - b).abs() < 1e-6,
        None => a.is_nan(),
    };
    let patch_refs = reference["patch"].as_array().unwrap();
    for ((id, entropy, inside), want) in scalars.iter().zip(patch_refs) {
        assert!(
            close(*entropy, &want["entropy"]),
            "{id}: entropy {entropy} vs {want}"
        );
        assert!(
            close(*inside, &want["in_region"]),
            "{id}: region {inside} vs {want}"
        );
    }
    // Changed cells have both scalars, the baselines (exactly zero maps) none. (c022, its
    // baseline's pixels in another row of the batch, has a map below 1e-6: zero or not,
    // depending on the encoder's rounding.)
    for (id, entropy, inside) in scalars.iter().filter(|s| s.0 != "c022") {
        let zero = id.starts_with("c00");
        let defined = *entropy > 0.0 && *inside > 0.0 && *inside < 1.0;
        assert!(
            zero == (entropy.is_nan() && inside.is_nan()) && zero != defined,
            "{id}: entropy {entropy}, in region {inside}"
        );
    }
    for ((id, ours), want) in grids.iter().zip(patch_refs) {
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
    for (e, scorer) in [(Embedder::Clip, &clip_id), (Embedder::Dino, &dino_id)] {
        for id in ["c001", "c002"] {
            let map = values(&patch_change_file(&dir, id, e, scorer));
            assert!(map.contains(&0.0), "{id} {e:?}");
            assert!(map.iter().all(|v| v.is_nan() || *v == 0.0), "{id} {e:?}");
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
        values(&patch_change_file(&dir, "c011", Embedder::Clip, &clip_id)),
    );
    let differ = luma_map
        .iter()
        .zip(&clip_map)
        .filter(|(a, b)| !b.is_nan() && (*a - *b).abs() > 1e-3)
        .count();
    assert!(differ > 100, "{differ} pixels differ from the luma map");

    // Two CLIP scorers: two files, other maps; a grid shows the first scorer's by id.
    let clip2_map = values(&patch_change_file(&dir, "c011", Embedder::Clip, &clip2_id));
    let differ = clip_map
        .iter()
        .zip(&clip2_map)
        .filter(|(a, b)| (*a - *b).abs() > 1e-4)
        .count();
    assert!(
        differ > 100,
        "{differ} pixels differ between the two scorers"
    );
    let files = patch_change_files(&dir, "c011", Embedder::Clip);
    assert_eq!(files.len(), 2, "{files:?}");
    let first = if clip_id < clip2_id {
        &clip_id
    } else {
        &clip2_id
    };
    assert_eq!(
        files[0],
        patch_change_file(&dir, "c011", Embedder::Clip, first)
    );
    let kind = MapKind::PatchChange(Embedder::Clip);
    let mut plots = fx.info.plots.clone();
    for (name, embedder) in [
        ("change_clip", Embedder::Clip),
        ("change_dino", Embedder::Dino),
    ] {
        plots.show = negimg::run::info::Show::parse(name).unwrap();
        let shown = Picture::Map(MapKind::PatchChange(embedder));
        assert_eq!(Picture::of(&plots), shown, "[plots] show = {name:?}");
    }
    let scale = negimg::report::maps::run_scale(&dir, &fx.records, kind).unwrap();
    let record = fx.records.iter().find(|r| r.cell_id == "c011").unwrap();
    let picture =
        negimg::report::maps::cell_picture(&dir, record, Picture::Map(kind), scale).unwrap();
    let (rows, cols, first_map) = negimg::npy::read(&files[0]).unwrap();
    let want = negimg::report::maps::heat_map(rows, cols, &first_map, scale, (48, 32));
    assert_eq!(
        picture, want,
        "the grid's picture is the first scorer's map"
    );
    let other = patch_change_file(&dir, "c011", Embedder::Clip, &clip2_id);
    assert!(
        other.with_extension("png").is_file(),
        "each scorer's map drawn"
    );
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
    assert!(patch_change_files(&dir, id, Embedder::Dino).is_empty());
    assert!(!dir.join("maps").exists());
}
