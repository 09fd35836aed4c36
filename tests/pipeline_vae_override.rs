//! `[models] vae` replaces the pipeline's own VAE: the override is the VAE that decodes.
mod common;

use negimg::models::vae::{AutoencoderKLConfig, write_random_model};
use negimg::params::{GenParams, NegativeMode};
use negimg::roles::ModelSet;
use std::path::PathBuf;

fn images(models: &ModelSet<PathBuf>) -> Vec<tch::Tensor> {
    let mut pipeline = common::load_pipeline(models);
    let mut cell = GenParams::new(7);
    cell.steps = 2;
    cell.width = 32;
    cell.height = 32;
    cell.negative = NegativeMode::None;
    common::generate_float(&mut pipeline, &[cell], 1, &mut |_, _| {})
        .into_iter()
        .map(|o| o.unwrap())
        .collect()
}

#[test]
fn vae_override_folder_decodes_instead_of_the_pipelines_own() {
    let tiny = common::tiny::tiny_models();
    let base = ModelSet::from_models_dir(&tiny);
    let own = images(&base);

    // The pipeline's own VAE given as the override: the same images.
    let same = ModelSet {
        vae: Some(tiny.join("pipeline/vae")),
        ..base.clone()
    };
    assert_eq!(common::max_abs_diff(&own[0], &images(&same)[0]), 0.0);

    // Another VAE (other random weights, same shapes): other images.
    let dir = common::scratch("pipeline_vae_override");
    write_random_model(&dir.join("vae"), &AutoencoderKLConfig::tiny(), 12345, false).unwrap();
    let other = ModelSet {
        vae: Some(dir.join("vae")),
        ..base
    };
    let d = common::max_abs_diff(&own[0], &images(&other)[0]);
    assert!(d > 1e-3, "the override VAE was not used (max diff {d})");
}
