//! DINOv2 weights load with or without transformers' base-model prefix (`dinov2.`), as
//! transformers loads both (a `Dinov2Model` saves without it; models built on it save with it).
mod common;

use negimg::models::dinov2::{Dinov2Config, Dinov2Model, write_random_model};
use tch::{Device, Kind, Tensor};

#[test]
fn dinov2_weights_load_with_and_without_the_base_model_prefix() {
    let dir = common::scratch("dinov2_layouts");
    let (plain, prefixed) = (dir.join("plain"), dir.join("prefixed"));
    write_random_model(&plain, &Dinov2Config::tiny(), 5).unwrap();
    std::fs::create_dir_all(&prefixed).unwrap();
    for name in ["config.json", "preprocessor_config.json"] {
        if plain.join(name).is_file() {
            std::fs::copy(plain.join(name), prefixed.join(name)).unwrap();
        }
    }
    let tensors = Tensor::read_safetensors(plain.join("model.safetensors")).unwrap();
    let renamed: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| (format!("dinov2.{k}"), t))
        .collect();
    Tensor::write_safetensors(&renamed, prefixed.join("model.safetensors")).unwrap();

    let pixels = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let embed = |d: &std::path::Path| {
        let model = Dinov2Model::load(d, Device::Cpu, Kind::Float).unwrap();
        tch::no_grad(|| model.image_embeds(&pixels))
    };
    let (a, b) = (embed(&plain), embed(&prefixed));
    assert_eq!(common::max_abs_diff(&a, &b), 0.0, "the two layouts differ");
}
