//! NegToMe on SDXL against the reference of tests/parity_negtome.rs
//! (tests/reference/negtome_parity.py: diffusers' SDXL UNet with merging attention
//! processors, its added conditioning as StableDiffusionXLPipeline makes it; CPU, fp32,
//! DDIM), alone (`method = negtome`) and on top of `uncond`, within 1/255; the reference
//! merged tokens; a guard (the merge changes the image); batching with cells of other
//! micro-conditioning.
//!
//! The tiny SDXL set's up blocks run at a quarter and a half of the latent size, and its VAE
//! downsamples by 2, so at 128x128 `up_blocks.1` sees 32x32 tokens (NegToMe's minimum) and
//! `up_blocks.0` 16x16 (left alone). Its UNet here has two transformer layers in both
//! attention levels (SDXL's layout has 2 and 10), so the merge acts in every layer of a
//! transformer; the rest of the tiny SDXL pipeline (two text encoders, VAE) is reused.
mod common;

use common::parity::{self, Parity, Setup};
use negimg::models::clip_vision::ClipVisionConfig;
use negimg::models::unet::{self, OneOrMany, UNet2DConditionConfig};
use negimg::params::{AdapterKind, GenParams, Method, MicroPair};
use negimg::pipeline::Pipeline;
use negimg::pipeline::negtome::noise_seed;
use negimg::pipeline::write_random_adapter;
use negimg::roles::{ModelSet, sdxl_adapter_file_name};
use serde_json::json;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind};

const SIZE: usize = 128;

/// The tiny SDXL UNet with two transformer layers per attention level.
fn unet_config() -> UNet2DConditionConfig {
    UNet2DConditionConfig {
        transformer_layers_per_block: OneOrMany::Many(vec![1, 2, 2]),
        ..UNet2DConditionConfig::tiny_sdxl()
    }
}

/// The tiny SDXL set with [`unet_config`]'s UNet and adapters that fit it (written once).
fn models() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(write_models).clone()
}

fn write_models() -> PathBuf {
    let tiny = common::tiny::tiny_sdxl_models();
    let dir = common::scratch("parity_sdxl_negtome_models");
    let pipeline = dir.join("pipeline");
    std::fs::create_dir_all(&pipeline).unwrap();
    for entry in std::fs::read_dir(tiny.join("pipeline")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "unet" {
            symlink(&path, pipeline.join(path.file_name().unwrap())).unwrap();
        }
    }
    symlink(tiny.join("image_encoder"), dir.join("image_encoder")).unwrap();
    let cfg = unet_config();
    unet::write_random_model(&pipeline.join("unet"), &cfg, 31, false).unwrap();
    for (seed, kind) in [(32, AdapterKind::Base), (33, AdapterKind::Plus)] {
        let file = dir.join(sdxl_adapter_file_name(kind).unwrap());
        write_random_adapter(&file, kind, &cfg, &ClipVisionConfig::tiny(), seed).unwrap();
    }
    dir
}

/// A NegToMe cell of 128x128 whose merge is active at 3 of its 4 DDIM steps (timesteps 751,
/// 501, 251 but not 1).
fn cell(dir: &Path, method: Method, adapter: AdapterKind) -> (String, GenParams) {
    let mut c = parity::cell(dir, 7);
    c.method = method;
    c.negtome = method != Method::Negtome;
    c.adapter = adapter;
    c.positive.weight = 0.8;
    c.negative_branch.weight = 0.6;
    c.negtome_alpha = 0.9;
    c.negtome_threshold = 0.9;
    c.negtome_t_min = 200.0;
    c.negtome_t_max = 1000.0;
    c.width = SIZE;
    c.height = SIZE;
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
            models: models(),
            // At the generation size: the VAE's input needs no resampling, so both sides agree.
            neg_size: (SIZE as u32, SIZE as u32),
            extra: &negtome_json,
            ..Setup::tiny("parity_sdxl_negtome", "negtome_parity.py")
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

/// Ours matches the reference within 1/255, and the reference merged some tokens, not all.
#[test]
fn parity_sdxl_negtome_alone_and_with_uncond() {
    // 3 active steps x 2 rows x 3 transformers (up_blocks.1) x 2 layers x 2 attentions
    // x 32*32 tokens.
    shared().assert_negtome_parity((3 * 2 * 3 * 2 * 2 * 32 * 32) as f64);
}

/// The merge changes the image: ours is far (> 2/255, twice the parity tolerance) from the
/// reference's image of the same cell without the merge.
#[test]
fn sdxl_negtome_guard_merge_is_not_skipped() {
    shared().assert_negtome_merge_not_skipped();
}

/// Batched as the runner does and one by one give the same images within 1e-5 (float64),
/// with micro-conditioning (both halves) set in the first cell and not in the second (a
/// NegToMe cell and an uncond cell with `negtome = true`, one negative image): the reference
/// row they share takes the default time ids, not the first row's.
#[test]
fn sdxl_negtome_batched_with_micro_conditioning_equals_alone() {
    let dir = common::scratch("sdxl_negtome_batching");
    parity::write_pos_neg(&dir, (SIZE as u32, SIZE as u32));
    let mut cells: Vec<GenParams> = [Method::Negtome, Method::Uncond]
        .into_iter()
        .enumerate()
        .map(|(i, method)| {
            let mut c = cell(&dir, method, AdapterKind::Base).1;
            c.seed = 40 + i as u64;
            c.steps = 2;
            c.negtome_t_min = 0.0;
            c
        })
        .collect();
    cells[0].original_size = Some(MicroPair(256, 192));
    cells[0].negative_original_size = Some(MicroPair(64, 64));
    cells[0].negative_crops_coords_top_left = Some(MicroPair(8, 8));
    let set = ModelSet::from_models_dir(&models());
    let mut pipeline = Pipeline::load(&set, Device::Cpu, Kind::Double, &mut |_| {}).unwrap();
    let calls = (2, "one batch of 2 steps");
    common::assert_batched_equal_alone(&mut pipeline, &cells, calls, &|i| format!("cell {i}"));
}
