//! UNet parity with diffusers 0.42 (CPU, fp32, tiny random weights written by
//! `unet::write_random_model` and read by diffusers from the same folder): one step without
//! the IP-Adapter (per-row timesteps) and with it (per-row IP scales 0, 0.6, 1.3, each row
//! checked against diffusers run with that scale). Also: loading errors name the tensor.
mod common;

use common::parity::{self, get};
use negimg::models::unet::{
    IpInput, IpLayout, UNet2DConditionConfig, UNet2DConditionModel, ip_attn_hidden_sizes,
    write_random_model,
};
use negimg::weights::{TensorFile, TensorSource};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

/// A base IP-Adapter file (`image_proj.proj`/`norm` + `ip_adapter.{k}.to_{k,v}_ip`) with
/// random weights fitting a UNet whose cross-attention widths are `widths`.
fn write_adapter(path: &Path, widths: &[i64], cross: i64, embed_dim: i64, seed: i64) {
    let _generator = negimg::weights::random::seeded_generator(seed);
    let f = (Kind::Float, Device::Cpu);
    let mut tensors = vec![
        (
            "image_proj.proj.weight".to_string(),
            Tensor::randn([4 * cross, embed_dim], f) * 0.1,
        ),
        (
            "image_proj.proj.bias".to_string(),
            Tensor::randn([4 * cross], f) * 0.1,
        ),
        (
            "image_proj.norm.weight".to_string(),
            Tensor::ones([cross], f) + Tensor::randn([cross], f) * 0.1,
        ),
        (
            "image_proj.norm.bias".to_string(),
            Tensor::randn([cross], f) * 0.1,
        ),
    ];
    for (i, &w) in widths.iter().enumerate() {
        let k = 2 * i + 1;
        for name in ["to_k_ip", "to_v_ip"] {
            tensors.push((
                format!("ip_adapter.{k}.{name}.weight"),
                Tensor::randn([w, cross], f) * 0.2,
            ));
        }
    }
    Tensor::write_safetensors(&tensors, path).unwrap();
}

#[test]
fn parity_unet_one_step_with_and_without_ip_adapter() {
    let setup = parity::UnetSetup::new("parity_unet", UNet2DConditionConfig::tiny());
    let cfg = &setup.cfg;
    write_adapter(
        &setup.adapter,
        &ip_attn_hidden_sizes(cfg),
        cfg.context_dim(),
        16,
        11,
    );
    let x = setup.write_inputs(|| {
        let f = (Kind::Float, Device::Cpu);
        vec![
            ("latents", Tensor::randn([3, 4, 8, 8], f)),
            ("text", Tensor::randn([3, 77, 32], f)),
            ("image_embeds", Tensor::randn([3, 1, 16], f)),
            ("scales", Tensor::from_slice(&[0.0f32, 0.6, 1.3])),
            ("timesteps", Tensor::from_slice(&[981i64, 501, 1])),
            ("t", Tensor::from_slice(&[501.0f64])),
        ]
    });
    let reference = setup.reference("unet_parity.py");
    let (latents, text) = (get(&x, "latents"), get(&x, "text"));

    let plain = setup.load_plain();
    let timesteps = x.get("timesteps", Device::Cpu, Kind::Int64).unwrap();
    let eps = tch::no_grad(|| plain.forward_timesteps(&latents, &timesteps, &text, None));
    let diff = common::max_abs_diff(&eps, &get(&reference, "eps_plain"));
    eprintln!("UNet without IP, per-row timesteps: max abs diff {diff:e}");
    assert!(
        diff <= TOL,
        "UNet without IP differs from diffusers by {diff}"
    );

    let mut unet = setup.load_ip_layers();
    // Before the adapter is loaded the IP branch is inert.
    let tokens = get(&reference, "tokens");
    let scales = get(&x, "scales");
    let inert = tch::no_grad(|| {
        unet.forward(
            &latents,
            501.0,
            &text,
            Some(IpInput::uniform(&tokens, &scales)),
        )
    });
    let plain_501 = tch::no_grad(|| plain.forward(&latents, 501.0, &text, None));
    assert!(common::max_abs_diff(&inert, &plain_501) < 1e-6);

    unet.load_ip_adapter(&TensorFile::open(&setup.adapter).unwrap())
        .unwrap();
    let eps = tch::no_grad(|| {
        unet.forward(
            &latents,
            501.0,
            &text,
            Some(IpInput::uniform(&tokens, &scales)),
        )
    });
    let expected = get(&reference, "eps_ip");
    let diff = common::max_abs_diff(&eps, &expected);
    eprintln!("UNet with IP, scales [0, 0.6, 1.3]: max abs diff {diff:e}");
    assert!(diff <= TOL, "UNet with IP differs from diffusers by {diff}");
    // The scales matter: the rows differ from each other and the zero-scale row is plain.
    assert!(common::max_abs_diff(&expected.get(1), &expected.get(2)) > 1e-3);
    assert!(common::max_abs_diff(&eps.get(0), &plain_501.get(0)) < 1e-6);
    assert!(common::max_abs_diff(&eps.get(1), &plain_501.get(1)) > 1e-3);
}

/// Rewrites `src` into `dst` with `edit` applied to its (name, tensor) list.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let file = TensorFile::open(src).unwrap();
    let mut tensors: Vec<(String, Tensor)> = file
        .names()
        .into_iter()
        .map(|n| {
            let t = get(&file, &n);
            (n, t)
        })
        .collect();
    edit(&mut tensors);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    Tensor::write_safetensors(&tensors, dst).unwrap();
}

#[test]
fn parity_unet_load_errors_name_tensor_and_shapes() {
    let dir = common::scratch("parity_unet_errors");
    let cfg = UNet2DConditionConfig::tiny();
    let good = dir.join("good");
    write_random_model(&good, &cfg, 1, true).unwrap();
    assert!(
        good.join("diffusion_pytorch_model.fp16.safetensors")
            .is_file()
    );
    let weights = good.join("diffusion_pytorch_model.safetensors");
    let key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight";

    // Wrong shape.
    let bad = dir.join("bad_shape/diffusion_pytorch_model.safetensors");
    rewrite(&weights, &bad, |t| {
        let entry = t.iter_mut().find(|(n, _)| n == key).unwrap();
        entry.1 = Tensor::zeros([32, 16], (Kind::Float, Device::Cpu));
    });
    std::fs::copy(good.join("config.json"), dir.join("bad_shape/config.json")).unwrap();
    let err = format!(
        "{:#}",
        UNet2DConditionModel::load(bad.parent().unwrap(), Device::Cpu, Kind::Float, None)
            .unwrap_err()
    );
    assert!(
        err.contains(key) && err.contains("[32, 16]") && err.contains("[32, 32]"),
        "{err}"
    );
    assert!(err.contains("bad_shape"), "error names the file: {err}");

    // Missing tensor.
    let missing = dir.join("missing/diffusion_pytorch_model.safetensors");
    rewrite(&weights, &missing, |t| {
        t.retain(|(n, _)| n != "mid_block.resnets.1.conv2.bias")
    });
    std::fs::copy(good.join("config.json"), dir.join("missing/config.json")).unwrap();
    let err = format!(
        "{:#}",
        UNet2DConditionModel::load(&missing, Device::Cpu, Kind::Float, None).unwrap_err()
    );
    assert!(
        err.contains("mid_block.resnets.1.conv2.bias")
            && err.contains("missing")
            && err.contains("[64]"),
        "{err}"
    );

    // An adapter made for other widths, and one for another layer count.
    let mut unet = UNet2DConditionModel::load(
        &good,
        Device::Cpu,
        Kind::Float,
        Some(IpLayout::for_config(&cfg)),
    )
    .unwrap();
    let mut widths = ip_attn_hidden_sizes(&cfg);
    widths[2] = 48;
    let adapter = dir.join("wide.safetensors");
    write_adapter(&adapter, &widths, 32, 16, 1);
    let err = format!(
        "{:#}",
        unet.load_ip_adapter(&TensorFile::open(&adapter).unwrap())
            .unwrap_err()
    );
    assert!(
        err.contains("ip_adapter.5.to_k_ip.weight")
            && err.contains("[48, 32]")
            && err.contains("[32, 32]"),
        "{err}"
    );
    assert!(
        err.contains("wide.safetensors") && err.contains("up_blocks.1.attentions.0"),
        "{err}"
    );
    let sd15_adapter = dir.join("sd15.safetensors");
    write_adapter(&sd15_adapter, &[32; 16], 32, 16, 1);
    let err = format!(
        "{:#}",
        unet.load_ip_adapter(&TensorFile::open(&sd15_adapter).unwrap())
            .unwrap_err()
    );
    assert!(
        err.contains("16 cross-attention layers") && err.contains("has 6"),
        "{err}"
    );

    // A UNet built without IP layers refuses an adapter.
    let mut plain = UNet2DConditionModel::load(&good, Device::Cpu, Kind::Float, None).unwrap();
    let err = format!(
        "{:#}",
        plain
            .load_ip_adapter(&TensorFile::open(&adapter).unwrap())
            .unwrap_err()
    );
    assert!(err.contains("without IP-Adapter layers"), "{err}");
}

/// Kinds stay consistent in half precision (no hard-coded fp32 inside): a UNet loaded as
/// fp16 (from the `.fp16` variant) runs on the CPU and agrees with fp32 to fp16 accuracy.
#[test]
fn parity_unet_half_precision_kinds() {
    let dir = common::scratch("parity_unet_half");
    let cfg = UNet2DConditionConfig::tiny();
    write_random_model(&dir, &cfg, 2, true).unwrap();
    let ip = Some(IpLayout::for_config(&cfg));
    let adapter = dir.join("ip.safetensors");
    write_adapter(&adapter, &ip_attn_hidden_sizes(&cfg), 32, 16, 4);
    let adapter = TensorFile::open(&adapter).unwrap();
    let mut full = UNet2DConditionModel::load(&dir, Device::Cpu, Kind::Float, ip).unwrap();
    let mut half = UNet2DConditionModel::load(&dir, Device::Cpu, Kind::Half, ip).unwrap();
    full.load_ip_adapter(&adapter).unwrap();
    half.load_ip_adapter(&adapter).unwrap();
    let generator = negimg::weights::random::seeded_generator(1);
    let f = (Kind::Float, Device::Cpu);
    let (x, text, tokens) = (
        Tensor::randn([2, 4, 8, 8], f),
        Tensor::randn([2, 77, 32], f),
        Tensor::randn([2, 4, 32], f),
    );
    drop(generator);
    let scale = Tensor::from_slice(&[0.5f32, 1.0]);
    let a =
        tch::no_grad(|| full.forward(&x, 700.0, &text, Some(IpInput::uniform(&tokens, &scale))));
    let b =
        tch::no_grad(|| half.forward(&x, 700.0, &text, Some(IpInput::uniform(&tokens, &scale))));
    assert_eq!(b.kind(), Kind::Half);
    let diff = common::max_abs_diff(&a, &b);
    eprintln!("UNet fp16 vs fp32: max abs diff {diff:e}");
    assert!(diff < 0.05, "fp16 UNet differs from fp32 by {diff}");
}

/// With the SD1.5 layout (4 levels, 8 heads, cross width 768; channels narrowed to keep
/// the build quick), the variables are exactly diffusers' state-dict keys and shapes
/// (diffusers builds the model from our config.json on the meta device), and the
/// IP-Adapter layer order is diffusers' `attn_processors` order.
#[test]
fn parity_unet_sd15_layout_keys_and_ip_order() {
    let cfg = UNet2DConditionConfig {
        block_out_channels: vec![32, 64, 128, 128],
        ..UNet2DConditionConfig::sd15()
    };
    parity::assert_unet_layout_is_diffusers("parity_unet_sd15_keys", &cfg);
}
