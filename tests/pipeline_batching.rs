//! Batching must not change results: cells generated one by one and together (CPU, fp32,
//! tiny models) give the same float images within 1e-5.
mod common;

use negimg::params::{AdapterKind, BranchWeight, GenParams, NegativeMode, SchedulerKind};
use negimg::roles::ModelSet;

fn write_image(path: &std::path::Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 5 + seed * 40) as u8,
            (y * 7 + seed) as u8,
            ((x ^ y) * 3) as u8,
        ])
    });
    img.save(path).unwrap();
}

#[test]
fn batched_cells_equal_cells_generated_alone() {
    let dir = common::scratch("pipeline_batching");
    let models = common::tiny::tiny_models();
    let images: Vec<_> = (0..3)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            write_image(&p, 40 + 8 * i, 48, i);
            p
        })
        .collect();
    // Cells that differ in everything but the batch key: images, modes, weights, windows,
    // guidance, prompts, seeds.
    let mut cells = Vec::new();
    for i in 0..5usize {
        let mut c = GenParams::new(100 + i as u64);
        c.steps = 4;
        c.width = 32;
        c.height = 32;
        c.scheduler = SchedulerKind::DpmPp2mKarras;
        c.adapter = AdapterKind::Plus;
        c.positive_image = (i != 3).then(|| images[i % 3].clone());
        c.negative_image = Some(images[(i + 1) % 3].clone());
        c.negative = [
            NegativeMode::None,
            NegativeMode::Text,
            NegativeMode::Image,
            NegativeMode::Both,
        ][i % 4];
        c.prompt = ["", "a red house", "snow"][i % 3].into();
        c.negative_prompt = ["grass", "", "blur"][i % 3].into();
        c.positive = BranchWeight {
            weight: 0.5 + 0.25 * i as f64,
            start: 0.0,
            end: 1.0 - 0.25 * (i % 2) as f64,
        };
        c.negative_branch = BranchWeight {
            weight: 1.5 - 0.25 * i as f64,
            start: 0.25 * (i % 2) as f64,
            end: 1.0,
        };
        c.cfg = [7.5, 3.0, 1.0, 12.0, 5.0][i];
        cells.push(c);
    }
    // A text-to-image cell: weights 0 and no images.
    let mut t2i = GenParams::new(7);
    t2i.steps = 4;
    t2i.width = 32;
    t2i.height = 32;
    t2i.scheduler = SchedulerKind::DpmPp2mKarras;
    t2i.adapter = AdapterKind::Plus;
    t2i.negative = NegativeMode::None;
    t2i.prompt = "a cat".into();
    t2i.positive.weight = 0.0;
    t2i.negative_branch.weight = 0.0;
    cells.push(t2i);

    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let alone = common::generate_float(&mut pipeline, &cells, 1, &mut |_, _| {});
    let mut calls = 0;
    let together =
        common::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| calls += 1);
    assert_eq!(calls, 4, "one batch of 4 steps");
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let d = common::max_abs_diff(a, b);
        assert!(d <= 1e-5, "cell {i}: batched image differs by {d}");
    }
}

/// Cells of every negative method in one batch (two- and three-row cells mixed, both
/// adapters' layouts of rows) give the images they give alone.
#[test]
fn batched_mixed_methods_equal_cells_generated_alone() {
    use negimg::params::Method;
    let dir = common::scratch("pipeline_batching_methods");
    let models = common::tiny::tiny_models();
    let images: Vec<_> = (0..2)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            write_image(&p, 48, 40 + 8 * i, i);
            p
        })
        .collect();
    let methods = [
        Method::PerpNeg,
        Method::Uncond,
        Method::Subtract,
        Method::ThreeBranch,
        Method::PerpNeg,
        Method::Subtract,
    ];
    let mut cells = Vec::new();
    for (i, method) in methods.into_iter().enumerate() {
        for adapter in [AdapterKind::Base, AdapterKind::Plus] {
            let mut c = GenParams::new(200 + i as u64);
            c.steps = 3;
            c.width = 32;
            c.height = 32;
            c.adapter = adapter;
            c.method = method;
            c.positive_image = (i != 5).then(|| images[0].clone());
            c.negative_image = Some(images[1].clone());
            c.negative = [NegativeMode::Image, NegativeMode::Both][i % 2];
            c.prompt = ["a red house", ""][i % 2].into();
            c.negative_prompt = "grass".into();
            c.negative_branch.weight = 0.5 + 0.2 * i as f64;
            c.neg_embed_scale = 0.5 + 0.25 * i as f64;
            c.neg_cfg = (i % 3 == 0).then_some(2.5);
            c.cfg = [7.5, 4.0][i % 2];
            cells.push(c);
        }
    }
    let mut pipeline = common::load_pipeline(&ModelSet::from_models_dir(&models));
    let alone = common::generate_float(&mut pipeline, &cells, 1, &mut |_, _| {});
    let mut calls = 0;
    let together =
        common::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| calls += 1);
    assert_eq!(calls, 6, "one batch of 3 steps per adapter");
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let d = common::max_abs_diff(a, b);
        assert!(
            d <= 1e-5,
            "cell {i} ({}): batched image differs by {d}",
            cells[i].method
        );
    }
}
