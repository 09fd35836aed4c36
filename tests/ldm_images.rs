//! A single-file LDM checkpoint gives the same images as the diffusers folder of the same
//! weights, and the configs of a single file come from its `<name>.configs/` folder or from
//! its tensor shapes (SD1.5's exactly for SD1.5 shapes).
//! The LDM file is written from the tiny model set's pipeline folder by
//! tests/reference/ldm_write_tiny.py (its key mapping is checked there against diffusers' own
//! single-file converters).
mod common;

use negimg::models::clip_text::ClipTextConfig;
use negimg::models::unet::{OneOrMany, UNet2DConditionConfig};
use negimg::models::vae::AutoencoderKLConfig;
use negimg::params::{AdapterKind, GenParams, NegativeMode};
use negimg::pipeline::single_file::{
    infer_text_config, infer_unet_config, infer_vae_config, open_single_file,
};
use negimg::roles::ModelSet;
use std::path::{Path, PathBuf};

/// `dir/ldm.safetensors`: the tiny model set's pipeline folder in the LDM layout.
fn tiny_single_file(dir: &Path) -> PathBuf {
    let pipeline = common::tiny::tiny_models().join("pipeline");
    common::run_python(
        "ldm_write_tiny.py",
        &[dir.to_str().unwrap(), pipeline.to_str().unwrap()],
    );
    dir.join("ldm.safetensors")
}

/// Copies `component/config.json` of the tiny pipeline folder into `<ckpt>.configs/`.
fn give_config(ckpt: &Path, component: &str) {
    let from = common::tiny::tiny_models().join("pipeline").join(component);
    let to = ckpt.with_extension("configs").join(component);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("config.json"), to.join("config.json")).unwrap();
}

#[test]
fn ldm_single_file_generates_the_folder_images() {
    let dir = common::scratch("ldm_images");
    let ckpt = tiny_single_file(&dir);
    // The tiny models have 4 heads, not SD1.x's: their configs go beside the file.
    for component in ["unet", "vae", "text_encoder"] {
        give_config(&ckpt, component);
    }
    let negative = dir.join("negative.png");
    image::RgbImage::from_fn(40, 48, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 5) as u8, 90])
    })
    .save(&negative)
    .unwrap();
    // An image-negative cell with the base adapter, and a text-to-image cell; 32x32 images
    // (16x16 latents with the tiny VAE) keep the test quick.
    let mut cells = Vec::new();
    for (seed, prompt) in [(11, "a red house"), (12, "snow")] {
        let mut c = GenParams::new(seed);
        c.steps = 4;
        c.width = 32;
        c.height = 32;
        c.adapter = AdapterKind::Base;
        c.prompt = prompt.into();
        cells.push(c);
    }
    cells[0].negative = NegativeMode::Image;
    cells[0].negative_image = Some(negative);
    cells[1].negative = NegativeMode::None;
    cells[1].positive.weight = 0.0;
    cells[1].negative_branch.weight = 0.0;

    let folder = ModelSet::from_models_dir(&common::tiny::tiny_models());
    let single = ModelSet {
        pipeline: ckpt.clone(),
        ..folder.clone()
    };
    let generate = |models: &ModelSet<PathBuf>| common::generate_images(models, &cells, 4);
    let (expected, got) = (generate(&folder), generate(&single));
    assert_eq!(expected[0].size(), [3, 32, 32]);
    assert!(
        common::max_abs_diff(&expected[0], &expected[1]) > 1e-3,
        "the two cells should differ"
    );
    for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
        // Same tensors through the same ops in the same order: bit-identical.
        assert_eq!(common::max_abs_diff(a, b), 0.0, "cell {i}");
    }

    // A scheduler config beside the file replaces the demo's DDIM.
    let scheduler = ckpt.with_extension("configs").join("scheduler");
    std::fs::create_dir_all(&scheduler).unwrap();
    let tiny_scheduler = folder.pipeline.join("scheduler/scheduler_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_scheduler).unwrap()).unwrap();
    config["beta_end"] = 0.02.into();
    std::fs::write(scheduler.join("scheduler_config.json"), config.to_string()).unwrap();
    let other = generate(&single);
    assert!(common::max_abs_diff(&expected[1], &other[1]) > 1e-3);
}

#[test]
fn ldm_configs_come_from_the_configs_folder_else_from_shapes() {
    let dir = common::scratch("ldm_configs");
    let path = tiny_single_file(&dir);
    let folder = common::tiny::tiny_models().join("pipeline");
    let ckpt = open_single_file(&path).unwrap();

    // Inferred from shapes: the folder's configs, but with SD1.x's 8 UNet heads (and SD1.5's
    // sample sizes, which do not change the network).
    let unet = UNet2DConditionConfig::from_json_file(&folder.join("unet/config.json")).unwrap();
    assert_eq!(
        ckpt.unet_config().unwrap(),
        UNet2DConditionConfig {
            attention_head_dim: OneOrMany::One(8),
            sample_size: Some(64),
            ..unet.clone()
        }
    );
    let vae = AutoencoderKLConfig::from_json_file(&folder.join("vae/config.json")).unwrap();
    assert_eq!(
        ckpt.vae_config().unwrap(),
        AutoencoderKLConfig {
            sample_size: 512,
            ..vae
        }
    );
    // A text encoder 32 wide cannot have SD1.x's 64-wide heads: the error says where the
    // config goes.
    let msg = format!("{:#}", ckpt.text_encoder_config().err().unwrap());
    let text_dir = path.with_extension("configs").join("text_encoder");
    assert!(
        msg.contains(&text_dir.display().to_string()) && msg.contains("head"),
        "{msg}"
    );

    // Configs beside the file win over the shapes, one component at a time.
    give_config(&path, "unet");
    give_config(&path, "text_encoder");
    assert_eq!(ckpt.unet_config().unwrap(), unet);
    let text = ckpt.text_encoder_config().unwrap();
    assert_eq!(
        (text.hidden_size, text.num_attention_heads, text.vocab_size),
        (32, 4, 49408)
    );
    assert_eq!(
        ckpt.vae_config().unwrap().sample_size,
        512,
        "still inferred"
    );
}

#[test]
fn ldm_sd15_shapes_infer_exactly_the_sd15_configs() {
    let parts = common::reference_shapes(
        "ldm_sd15_shapes",
        &UNet2DConditionConfig::sd15(),
        &AutoencoderKLConfig::sd15(),
        &ClipTextConfig::sd15(),
        None,
    );
    assert_eq!(
        infer_unet_config(&parts["unet"]).unwrap(),
        UNet2DConditionConfig::sd15()
    );
    assert_eq!(
        infer_vae_config(&parts["vae"]).unwrap(),
        AutoencoderKLConfig::sd15()
    );
    assert_eq!(
        serde_json::to_value(infer_text_config(&parts["text_encoder"]).unwrap()).unwrap(),
        serde_json::to_value(ClipTextConfig::sd15()).unwrap()
    );
}
