//! `ip-adapter_sdxl` (the base projection over a ViT-bigG image encoder's image_embeds, h94's
//! `sdxl_models/image_encoder`) end to end on an SDXL pipeline: the tiny SDXL set with a
//! ViT-bigG-shaped tiny encoder and a random `ip-adapter_sdxl.safetensors` written at test
//! time, full generation against diffusers' `StableDiffusionXLPipeline` with the file loaded
//! as `load_ip_adapter` loads it (tests/reference/pipeline_parity.py; CPU, fp32, 32x32),
//! within 1/255; guard: each image is far from the ViT-H `ip-adapter_sdxl_vit-h` image of the
//! same cell (tiny SDXL set).
mod common;

use common::parity::{self, Parity, Setup};
use negimg::params::{GenParams, NegativeMode, SchedulerKind};
use negimg::roles::ModelSet;
use std::path::Path;

fn cases(dir: &Path) -> Vec<(String, GenParams)> {
    let mut out = vec![];
    for (scheduler, modes) in [
        (
            SchedulerKind::Ddim,
            [NegativeMode::None, NegativeMode::Both],
        ),
        (
            SchedulerKind::DpmPp2mKarras,
            [NegativeMode::Image, NegativeMode::Text],
        ),
    ] {
        for mode in modes {
            let mut c = parity::cell(dir, 50 + out.len() as u64);
            c.scheduler = scheduler;
            c.negative = mode;
            out.push((format!("{scheduler}_{mode}"), c));
        }
    }
    out
}

#[test]
fn parity_sdxl_big_g_adapter_matches_diffusers_and_differs_from_vit_h() {
    let setup = Setup {
        models: common::tiny::big_g_sdxl_models("parity_sdxl_big_g_models"),
        ..Setup::tiny("parity_sdxl_big_g", "pipeline_parity.py")
    };
    let (parity, _) = Parity::compute(setup, cases);
    let names: Vec<String> = parity
        .select(|_| true)
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect();
    let cells: Vec<GenParams> = names.iter().map(|n| parity.cell(n).clone()).collect();
    let vit_h = ModelSet::from_models_dir(&common::tiny::tiny_sdxl_models());
    let mut pipeline = common::load_pipeline(&vit_h);
    let vit_h_images = common::generate_float(&mut pipeline, &cells, cells.len(), &mut |_, _| {});
    for (name, other) in names.iter().zip(vit_h_images) {
        parity.assert_parity(name);
        let other = other.unwrap();
        parity::assert_far(
            name,
            &parity.ours(name),
            &other,
            "the ViT-H adapter's image",
        );
    }
}
