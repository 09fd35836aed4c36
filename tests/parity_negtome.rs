//! NegToMe against a reference on diffusers' UNet with merging attention processors
//! (tests/reference/negtome_parity.py; CPU, fp32, tiny random models, DDIM), alone
//! (`method = negtome`) and on top of `uncond`; a guard (the merge changes the image); and
//! batching (cells sharing a negative image share one reference row; a batch with two
//! negative images and a cell without NegToMe gives the images the cells give alone).
//!
//! The tiny UNet's only up block with attention runs at the latent size, and the tiny VAE
//! downsamples by 2: 64x64 images have 32x32 latents, the smallest size NegToMe merges at.
mod common;

use common::parity::{self, Parity, Setup};
use negimg::params::{AdapterKind, GenParams, Method, NegativeMode};
use negimg::pipeline::Pipeline;
use negimg::pipeline::negtome::noise_seed;
use negimg::roles::ModelSet;
use serde_json::json;
use std::path::Path;
use std::sync::OnceLock;
use tch::{Device, Kind};

/// A NegToMe cell of 64x64 whose merge is active at 3 of its 4 DDIM steps (timesteps 751,
/// 501, 251 but not 1). Tokens of these random weights are near-parallel: at threshold 0.9
/// about a third of them merge, so both sides of the threshold are exercised.
fn cell(dir: &Path, method: Method, adapter: AdapterKind) -> (String, GenParams) {
    let mut c = parity::cell(dir, 5);
    c.method = method;
    c.negtome = method != Method::Negtome;
    c.adapter = adapter;
    c.positive.weight = 0.8;
    c.negative_branch.weight = 0.6;
    c.negtome_alpha = 0.9;
    c.negtome_threshold = 0.9;
    c.negtome_t_min = 200.0;
    c.negtome_t_max = 1000.0;
    c.width = 64;
    c.height = 64;
    (format!("{method}_{adapter}"), c)
}

/// What negtome_parity.py reads besides the common case keys.
fn negtome_json(c: &GenParams) -> serde_json::Value {
    let neg = c.negtome_image().unwrap();
    json!({
        "neg_image": neg.to_str().unwrap(),
        "weight": c.positive.weight, "neg_weight": c.negative_branch.weight,
        "alpha": c.negtome_alpha, "threshold": c.negtome_threshold,
        "t_min": c.negtome_t_min, "t_max": c.negtome_t_max,
        "noise_seed": noise_seed(&std::fs::read(neg).unwrap()),
    })
}

fn shared() -> &'static Parity {
    static SHARED: OnceLock<Parity> = OnceLock::new();
    SHARED.get_or_init(|| {
        let setup = Setup {
            // At the generation size: the VAE's input needs no resampling, so both sides agree.
            neg_size: (64, 64),
            extra: &negtome_json,
            ..Setup::tiny("parity_negtome", "negtome_parity.py")
        };
        let cells = |dir: &Path| {
            vec![
                cell(dir, Method::Negtome, AdapterKind::Base),
                cell(dir, Method::Uncond, AdapterKind::Plus),
            ]
        };
        Parity::compute(setup, cells).0
    })
}

/// Ours matches the reference within 1/255, and the reference did merge tokens.
#[test]
fn parity_negtome_alone_and_with_uncond() {
    // 3 active steps x 2 attentions x 2 rows x 3 transformers (up_blocks.1) x 32*32.
    shared().assert_negtome_parity((3 * 2 * 2 * 3 * 32 * 32) as f64);
}

/// The merge changes the image: ours is far (> 2/255, twice the parity tolerance) from the
/// reference's image of the same cell without the merge.
#[test]
fn negtome_guard_merge_is_not_skipped() {
    shared().assert_negtome_merge_not_skipped();
}

/// Batched as the runner does and one by one give the same images within 1e-5 (float64):
/// two negative images (so two reference rows), cells sharing one, different α, thresholds and
/// ranges, a three-row method with NegToMe, and a cell without NegToMe.
#[test]
fn negtome_batched_cells_equal_cells_generated_alone() {
    let dir = common::scratch("negtome_batching");
    let models = common::tiny::tiny_models();
    for (i, (w, h)) in [(64, 64), (80, 72), (64, 64)].into_iter().enumerate() {
        parity::write_image(&dir.join(format!("img{i}.png")), w, h, 10 + i as u32);
    }
    let mut cells = Vec::new();
    for i in 0..5usize {
        let mut c = GenParams::new(300 + i as u64);
        c.steps = 3;
        c.width = 64;
        c.height = 64;
        c.method = [
            Method::Negtome,
            Method::Negtome,
            Method::Uncond,
            Method::PerpNeg,
            Method::Uncond,
        ][i];
        c.negtome = matches!(i, 3 | 4);
        c.positive_image = Some(dir.join("img2.png"));
        // Cells 0, 1 and 4 share img0; cell 3 uses img1; cell 2 does not merge.
        c.negative_image =
            Some(dir.join(["img0.png", "img0.png", "img0.png", "img1.png", "img0.png"][i]));
        c.negative = [NegativeMode::Image, NegativeMode::Both][i % 2];
        c.prompt = ["a red house", "snow"][i % 2].into();
        c.negative_prompt = "grass".into();
        c.negtome_alpha = 0.5 + 0.2 * i as f64;
        c.negtome_threshold = 0.2 + 0.05 * i as f64;
        c.negtome_t_min = [0.0, 400.0, 0.0, 0.0, 600.0][i];
        c.cfg = [7.5, 4.0][i % 2];
        cells.push(c);
    }
    // In float64: the argmax and the threshold are discontinuous, so the float32 rounding
    // differences of batched matmuls (~1e-7) flip near-ties and move fp32 images by up to
    // ~3e-3 on these random weights (measured); float64 shows the rows are the same rows.
    let set = ModelSet::from_models_dir(&models);
    let mut pipeline = Pipeline::load(&set, Device::Cpu, Kind::Double, &mut |_| {}).unwrap();
    let calls = (3, "one batch of 3 steps");
    common::assert_batched_equal_alone(&mut pipeline, &cells, calls, &|i| format!("cell {i}"));
}
