//! Batching must not change results: cells generated one by one and together (CPU, tiny
//! models) give the same float images within 1e-5. The whole-image tests of the two-row
//! methods run in float64: in float32 the CPU's matrix kernels round differently for
//! different batch sizes on some processors (1.6e-5 measured on an AMD EPYC, below 1e-5 on
//! others), which would blur a test meant to catch rows leaking into each other. The
//! per-call test below and the mixed-method test stay in float32.
mod common;

use negimg::params::{AdapterKind, BranchWeight, GenParams, NegativeMode, SchedulerKind};
use negimg::roles::ModelSet;
use std::path::PathBuf;

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

/// `n` test images of `dir` (`img{i}.png`), the i-th of `size(i)`.
fn images(dir: &std::path::Path, n: u32, size: impl Fn(u32) -> (u32, u32)) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            let (w, h) = size(i);
            write_image(&p, w, h, i);
            p
        })
        .collect()
}

/// The pipeline of `models` on the CPU in float64.
fn load_f64(models: &ModelSet<PathBuf>) -> negimg::pipeline::Pipeline {
    negimg::pipeline::Pipeline::load(models, tch::Device::Cpu, tch::Kind::Double, &mut |_| {})
        .unwrap()
}

/// A cell of `steps` steps at 32x32.
fn small_cell(seed: u64, steps: usize) -> GenParams {
    let mut c = GenParams::new(seed);
    c.steps = steps;
    c.width = 32;
    c.height = 32;
    c
}

#[test]
fn batched_cells_equal_cells_generated_alone() {
    let dir = common::scratch("pipeline_batching");
    let models = common::tiny::tiny_models();
    let images = images(&dir, 3, |i| (40 + 8 * i, 48));
    // Cells that differ in everything but the batch key: images, modes, weights, windows,
    // guidance, prompts, seeds.
    let mut cells = Vec::new();
    for i in 0..5usize {
        let mut c = small_cell(100 + i as u64, 4);
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
    let mut t2i = small_cell(7, 4);
    t2i.scheduler = SchedulerKind::DpmPp2mKarras;
    t2i.adapter = AdapterKind::Plus;
    t2i.negative = NegativeMode::None;
    t2i.prompt = "a cat".into();
    t2i.positive.weight = 0.0;
    t2i.negative_branch.weight = 0.0;
    cells.push(t2i);

    let mut pipeline = load_f64(&ModelSet::from_models_dir(&models));
    let calls = (4, "one batch of 4 steps");
    common::assert_batched_equal_alone(&mut pipeline, &cells, calls, &|i| format!("cell {i}"));
}

/// Cells of every negative method in one batch (two- and three-row cells mixed, both
/// adapters' layouts of rows) give the images they give alone.
#[test]
fn batched_mixed_methods_equal_cells_generated_alone() {
    use negimg::params::Method;
    let dir = common::scratch("pipeline_batching_methods");
    let models = common::tiny::tiny_models();
    let images = images(&dir, 2, |i| (48, 40 + 8 * i));
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
            let mut c = small_cell(200 + i as u64, 3);
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
    let calls = (6, "one batch of 3 steps per adapter");
    let label = |i: usize| format!("cell {i} ({})", cells[i].method);
    common::assert_batched_equal_alone(&mut pipeline, &cells, calls, &label);
}

/// A grid whose cells differ in `blocks` and `neg_blocks` (presets and lists, on the tiny
/// models with SD1.5's 16-block layout) and in method: one batch, the same images as one by
/// one.
#[test]
fn batched_mixed_blocks_equal_cells_generated_alone() {
    use negimg::params::{BlockWeights, Method};
    let dir = common::scratch("pipeline_batching_blocks");
    let models = common::tiny::tiny_sd15_models();
    let images = images(&dir, 2, |i| (48, 40 + 8 * i));
    let blocks: [(BlockWeights, Option<&str>); 5] = [
        (BlockWeights::Style, None),
        (BlockWeights::All, Some("4:0.25, 5:1")),
        (BlockWeights::Composition, Some("strong_style")),
        (BlockWeights::StrongStyle, Some("0:1, 15:-0.5")),
        ("6:2, 7:1".parse().unwrap(), Some("all")),
    ];
    let mut cells = Vec::new();
    for (i, (b, nb)) in blocks.into_iter().enumerate() {
        for method in [Method::Uncond, Method::PerpNeg] {
            let mut c = small_cell(300 + i as u64, 3);
            c.method = method;
            c.positive_image = Some(images[0].clone());
            c.negative_image = Some(images[1].clone());
            c.negative_branch.weight = 0.5 + 0.3 * i as f64;
            c.neg_blocks = nb.map_or(b.clone(), |s| s.parse().unwrap());
            c.blocks = b.clone();
            cells.push(c);
        }
    }
    let mut pipeline = load_f64(&ModelSet::from_models_dir(&models));
    let label = |i: usize| {
        let c = &cells[i];
        format!(
            "cell {i} (blocks {}, neg_blocks {}, {})",
            c.blocks, c.neg_blocks, c.method
        )
    };
    common::assert_batched_equal_alone(&mut pipeline, &cells, (3, "one batch of 3 steps"), &label);
}

/// Each `ip_scaling` (one per batch: it is part of the batch key) computes every UNet row of
/// a batch as it computes the row alone, with a different weight per block and row. (Whole
/// images are compared for `v` above: the tiny random models amplify float rounding along a
/// trajectory, up to 1e-4 on 32x32 images with the penalized scalings, whose image attention
/// is nearly uniform there.)
#[test]
fn unet_rows_in_a_batch_equal_rows_alone_for_every_ip_scaling() {
    use negimg::models::unet::{IpInput, IpLayout, UNet2DConditionConfig, UNet2DConditionModel};
    use negimg::params::IpScaling;
    use tch::{Device, Kind, Tensor, nn};
    let cfg = UNet2DConditionConfig::tiny_sd15_layout();
    let vs = nn::VarStore::new(Device::Cpu);
    let unet =
        UNet2DConditionModel::new(vs.root(), &cfg, Some(IpLayout::for_config(&cfg))).unwrap();
    let b = 6;
    let randn = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let (x, text, tokens, scales) = {
        let _generator = negimg::weights::random::seeded_generator(3);
        for (_, mut v) in vs.variables() {
            tch::no_grad(|| v.copy_(&(randn(&v.size()) * 0.1)));
        }
        let scales = Tensor::rand([16, b], (Kind::Float, Device::Cpu)) * 3.0;
        (
            randn(&[b, 4, 16, 16]),
            randn(&[b, 7, 32]),
            randn(&[b, 4, 32]),
            scales,
        )
    };
    for scaling in [
        IpScaling::V,
        IpScaling::Kv,
        IpScaling::KvC,
        IpScaling::KMeanVC,
    ] {
        let all = IpInput {
            tokens: &tokens,
            scales: &scales,
            scaling,
        };
        let all = tch::no_grad(|| unet.forward(&x, 500.0, &text, Some(all)));
        for i in 0..b {
            let (t, s) = (tokens.narrow(0, i, 1), scales.narrow(1, i, 1));
            let ip = IpInput {
                tokens: &t,
                scales: &s,
                scaling,
            };
            let (x1, text1) = (x.narrow(0, i, 1), text.narrow(0, i, 1));
            let one = tch::no_grad(|| unet.forward(&x1, 500.0, &text1, Some(ip)));
            let d = common::max_abs_diff(&one, &all.narrow(0, i, 1));
            assert!(d <= 1e-5, "{scaling}, row {i}: {d} from the row alone");
        }
    }
}
