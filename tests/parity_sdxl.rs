//! SDXL against diffusers 0.42 (CPU, fp32, tiny random weights in SDXL's layout written at
//! test time): the `text_time` UNet's forward with and without an IP-Adapter, and its
//! variables and IP layer order against the model diffusers builds from our config.
mod common;

use negimg::models::clip_vision::ClipVisionConfig;
use negimg::models::unet::{
    Hooks, IpInput, IpLayout, TextTime, UNet2DConditionConfig, UNet2DConditionModel,
    write_random_model,
};
use negimg::params::AdapterKind;
use negimg::pipeline::write_random_adapter;
use negimg::weights::{TensorFile, TensorSource};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn get(file: &TensorFile, name: &str) -> Tensor {
    file.get(name, Device::Cpu, Kind::Float).unwrap()
}

#[test]
fn parity_sdxl_unet_one_step_with_and_without_ip_adapter() {
    let dir = common::scratch("parity_sdxl_unet");
    let cfg = UNet2DConditionConfig::tiny_sdxl();
    let unet_dir = dir.join("unet");
    write_random_model(&unet_dir, &cfg, 7, false).unwrap();
    let vision = ClipVisionConfig::tiny();
    let adapter = dir.join("ip-adapter.safetensors");
    write_random_adapter(&adapter, AdapterKind::Base, &cfg, &vision, 11).unwrap();

    tch::manual_seed(3);
    let f = (Kind::Float, Device::Cpu);
    let pooled = cfg.pooled_text_dim().unwrap();
    let inputs = dir.join("inputs.safetensors");
    let time_ids = Tensor::from_slice(&[64f32, 64., 0., 0., 64., 64.]).view([1, 6]);
    let input_tensors = [
        ("latents", Tensor::randn([3, 4, 8, 8], f)),
        ("text", Tensor::randn([3, 77, 64], f)),
        ("text_embeds", Tensor::randn([3, pooled], f)),
        // Rows with other sizes and crops: each id enters the embedding.
        (
            "time_ids",
            Tensor::cat(
                &[
                    time_ids.shallow_clone(),
                    Tensor::from_slice(&[48f32, 80., 8., 16., 64., 64.]).view([1, 6]),
                    Tensor::from_slice(&[1024f32, 1024., 0., 0., 512., 768.]).view([1, 6]),
                ],
                0,
            ),
        ),
        (
            "image_embeds",
            Tensor::randn([3, 1, vision.projection_dim], f),
        ),
        ("scales", Tensor::from_slice(&[0.0f32, 0.6, 1.3])),
        ("timesteps", Tensor::from_slice(&[981i64, 501, 1])),
        ("t", Tensor::from_slice(&[501.0f64])),
    ];
    Tensor::write_safetensors(&input_tensors, &inputs).unwrap();
    let out = dir.join("ref.safetensors");
    common::run_python(
        "unet_parity.py",
        &[
            unet_dir.to_str().unwrap(),
            adapter.to_str().unwrap(),
            inputs.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let reference = TensorFile::open(&out).unwrap();
    let x = TensorFile::open(&inputs).unwrap();
    let (latents, text) = (get(&x, "latents"), get(&x, "text"));
    let (text_embeds, time_ids) = (get(&x, "text_embeds"), get(&x, "time_ids"));
    let hooks = || Hooks {
        text_time: Some(TextTime {
            text_embeds: &text_embeds,
            time_ids: &time_ids,
        }),
        ..Default::default()
    };

    let plain = UNet2DConditionModel::load(&unet_dir, Device::Cpu, Kind::Float, None).unwrap();
    assert!(plain.takes_text_time());
    let timesteps = x.get("timesteps", Device::Cpu, Kind::Int64).unwrap();
    let eps = tch::no_grad(|| plain.forward_rows(&latents, &timesteps, &text, None, hooks()));
    let expected = get(&reference, "eps_plain");
    let diff = common::max_abs_diff(&eps, &expected);
    eprintln!("SDXL UNet without IP, per-row timesteps and time ids: max abs diff {diff:e}");
    assert!(diff <= TOL, "SDXL UNet differs from diffusers by {diff}");
    // The added embedding acts: other time ids give another output.
    let same_ids = time_ids.get(0).unsqueeze(0).expand([3, 6], false);
    let other = tch::no_grad(|| {
        let hooks = Hooks {
            text_time: Some(TextTime {
                text_embeds: &text_embeds,
                time_ids: &same_ids,
            }),
            ..Default::default()
        };
        plain.forward_rows(&latents, &timesteps, &text, None, hooks)
    });
    assert!(common::max_abs_diff(&other.get(2), &eps.get(2)) > 1e-4);

    let mut unet = UNet2DConditionModel::load(
        &unet_dir,
        Device::Cpu,
        Kind::Float,
        Some(IpLayout::for_config(&cfg)),
    )
    .unwrap();
    unet.load_ip_adapter(&TensorFile::open(&adapter).unwrap())
        .unwrap();
    let tokens = get(&reference, "tokens");
    assert_eq!(tokens.size()[2], 64, "the projection's width is the UNet's");
    let scales = get(&x, "scales");
    let t501 = Tensor::from_slice(&[501.0f32]);
    let eps = tch::no_grad(|| {
        let ip = IpInput::uniform(&tokens, &scales);
        unet.forward_rows(&latents, &t501, &text, Some(ip), hooks())
    });
    let expected = get(&reference, "eps_ip");
    let diff = common::max_abs_diff(&eps, &expected);
    eprintln!("SDXL UNet with IP, scales [0, 0.6, 1.3]: max abs diff {diff:e}");
    assert!(
        diff <= TOL,
        "SDXL UNet with IP differs from diffusers by {diff}"
    );
    let plain_501 = tch::no_grad(|| plain.forward_rows(&latents, &t501, &text, None, hooks()));
    assert!(common::max_abs_diff(&eps.get(0), &plain_501.get(0)) < 1e-6);
    let ip_effect = common::max_abs_diff(&eps.get(2), &plain_501.get(2));
    eprintln!("IP effect on the scale-1.3 row: {ip_effect:e}");
    assert!(ip_effect > 1e-5, "the adapter does not act ({ip_effect})");
}

/// SDXL's layout (three levels, depths 1/2/n, 5/10/20 heads, linear projections, cross
/// width 2048, `text_time`; channels narrowed and the deepest stack shortened to keep the
/// build quick): the variables are exactly diffusers' keys and shapes, and the IP layers
/// follow diffusers' `attn_processors` order (every transformer layer of every block).
#[test]
fn parity_sdxl_unet_layout_keys_and_ip_order() {
    let cfg = UNet2DConditionConfig {
        block_out_channels: vec![160, 160, 320],
        transformer_layers_per_block: negimg::models::unet::OneOrMany::Many(vec![1, 2, 3]),
        ..UNet2DConditionConfig::sdxl()
    };
    let reference =
        common::diffusers_model_keys("parity_sdxl_unet_keys", "unet", &cfg.to_config_json());
    let expected = common::shapes_of(&reference);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _unet = UNet2DConditionModel::new(vs.root(), &cfg, None).unwrap();
    assert_eq!(common::var_shapes(&vs), expected);
    let names: Vec<String> = negimg::models::unet::ip_attn_layers(&cfg)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let cross: Vec<String> = serde_json::from_value(reference["cross_attention"].clone()).unwrap();
    assert_eq!(names, cross);
    // 2 x 2 + 3 x 2 down, 3 x 2 x 3 + 2 x 3 up... every inner layer counts.
    assert_eq!(names.len(), 2 * 2 + 3 * 2 + 3 * 3 + 2 * 3 + 3);
    // The real SDXL: 70 cross-attention layers, as ip-adapter_sdxl's 140 keys.
    assert_eq!(
        negimg::models::unet::ip_attn_layers(&UNet2DConditionConfig::sdxl()).len(),
        70
    );
}

/// A `text_time` config needs both widths, and other added embeddings are refused by name.
#[test]
fn sdxl_unet_config_errors_name_the_key() {
    let cases = [
        (
            r#"{"addition_embed_type": "text_time"}"#,
            "addition_time_embed_dim",
        ),
        (
            r#"{"addition_embed_type": "text_image", "addition_time_embed_dim": 8}"#,
            "text_image",
        ),
        (
            r#"{"addition_time_embed_dim": 8}"#,
            "addition_time_embed_dim is set",
        ),
        (
            r#"{"reverse_transformer_layers_per_block": [[1], [1], [1], [1]]}"#,
            "reverse_transformer_layers_per_block",
        ),
    ];
    let dir = common::scratch("sdxl_unet_config_errors");
    for (json, want) in cases {
        let path = dir.join("config.json");
        std::fs::write(&path, json).unwrap();
        let err = format!(
            "{:#}",
            UNet2DConditionConfig::from_json_file(&path).unwrap_err()
        );
        assert!(err.contains(want) && err.contains("config.json"), "{err}");
    }
    let back: UNet2DConditionConfig =
        serde_json::from_str(&UNet2DConditionConfig::sdxl().to_config_json()).unwrap();
    assert_eq!(back, UNet2DConditionConfig::sdxl());
    back.validate().unwrap();
}
