//! VAE parity with diffusers 0.42 (CPU, fp32, tiny random weights written by
//! `vae::write_random_model` and read by diffusers from the same folder): decode, and the
//! encoder's latent mean. Also: VAEs saved with the pre-0.14 attention names load the same,
//! and fp16 decoding agrees with fp32.
mod common;

use negimg::models::vae::{AutoencoderKL, AutoencoderKLConfig, VaeParts, write_random_model};
use negimg::weights::{TensorFile, TensorSource};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

#[test]
fn parity_vae_decode_and_encode() {
    let dir = common::scratch("parity_vae");
    let cfg = AutoencoderKLConfig::tiny();
    let vae_dir = dir.join("vae");
    write_random_model(&vae_dir, &cfg, 5, false).unwrap();
    let generator = negimg::weights::random::seeded_generator(9);
    let f = (Kind::Float, Device::Cpu);
    let inputs = dir.join("inputs.safetensors");
    let tensors = [
        ("latents", Tensor::randn([2, 4, 16, 16], f)),
        ("images", Tensor::rand([1, 3, 32, 32], f) * 2.0 - 1.0),
    ];
    drop(generator);
    Tensor::write_safetensors(&tensors, &inputs).unwrap();
    let out = dir.join("ref.safetensors");
    common::run_python(
        "vae_parity.py",
        &[
            vae_dir.to_str().unwrap(),
            inputs.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    let reference = TensorFile::open(&out).unwrap();
    let x = TensorFile::open(&inputs).unwrap();
    let get = |file: &TensorFile, name: &str| file.get(name, Device::Cpu, Kind::Float).unwrap();

    let vae = AutoencoderKL::load(
        &vae_dir,
        Device::Cpu,
        Kind::Float,
        VaeParts::EncoderAndDecoder,
    )
    .unwrap();
    let decoded = tch::no_grad(|| vae.decode(&get(&x, "latents")));
    let expected = get(&reference, "decoded");
    let diff = common::max_abs_diff(&decoded, &expected);
    eprintln!(
        "VAE decode: max abs diff {diff:e} (output max abs {:.3})",
        expected.abs().max().double_value(&[])
    );
    assert!(diff <= TOL, "VAE decode differs from diffusers by {diff}");
    let mean = tch::no_grad(|| vae.encode(&get(&x, "images"))).unwrap();
    let diff = common::max_abs_diff(&mean, &get(&reference, "mean"));
    eprintln!("VAE encode: max abs diff {diff:e}");
    assert!(diff <= TOL, "VAE encode differs from diffusers by {diff}");

    // The same weights under the old attention names (query/key/value/proj_attn).
    let legacy_dir = dir.join("legacy");
    std::fs::create_dir_all(&legacy_dir).unwrap();
    std::fs::copy(vae_dir.join("config.json"), legacy_dir.join("config.json")).unwrap();
    let file = TensorFile::open(vae_dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let renamed: Vec<(String, Tensor)> = file
        .names()
        .into_iter()
        .map(|n| {
            let t = get(&file, &n);
            let old = n
                .replace("attentions.0.to_q.", "attentions.0.query.")
                .replace("attentions.0.to_k.", "attentions.0.key.")
                .replace("attentions.0.to_v.", "attentions.0.value.")
                .replace("attentions.0.to_out.0.", "attentions.0.proj_attn.");
            (old, t)
        })
        .collect();
    assert!(
        renamed
            .iter()
            .any(|(n, _)| n == "decoder.mid_block.attentions.0.proj_attn.weight")
    );
    Tensor::write_safetensors(
        &renamed,
        legacy_dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let legacy =
        AutoencoderKL::load(&legacy_dir, Device::Cpu, Kind::Float, VaeParts::DecoderOnly).unwrap();
    let again = tch::no_grad(|| legacy.decode(&get(&x, "latents")));
    assert!(common::max_abs_diff(&again, &decoded) == 0.0);
    let err = legacy.encode(&get(&x, "images")).unwrap_err().to_string();
    assert!(err.contains("without its encoder"), "{err}");

    // Decoding in fp16 (the model's kind) agrees with fp32 to fp16 accuracy.
    let half =
        AutoencoderKL::load(&vae_dir, Device::Cpu, Kind::Half, VaeParts::DecoderOnly).unwrap();
    let decoded_half = tch::no_grad(|| half.decode(&get(&x, "latents")));
    assert_eq!(decoded_half.kind(), Kind::Half);
    let diff = common::max_abs_diff(&decoded_half, &decoded);
    eprintln!("VAE decode fp16 vs fp32: max abs diff {diff:e}");
    assert!(diff < 0.05, "fp16 VAE differs from fp32 by {diff}");
}

/// With the SD1.5 VAE layout (4 levels, 2 layers; channels narrowed to keep it quick), the
/// variables with the encoder are exactly diffusers' state-dict keys and shapes.
#[test]
fn parity_vae_sd15_layout_keys() {
    let cfg = AutoencoderKLConfig {
        block_out_channels: vec![32, 64, 128, 128],
        ..AutoencoderKLConfig::sd15()
    };
    let expected = common::shapes_of(&common::diffusers_model_keys(
        "parity_vae_sd15_keys",
        "vae",
        &cfg.to_config_json(),
    ));
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _vae = AutoencoderKL::new(vs.root(), &cfg, VaeParts::EncoderAndDecoder).unwrap();
    let ours = common::var_shapes(&vs);
    assert_eq!(ours, expected);
}
