//! Single-file LDM checkpoints load to the same tensors as the diffusers layout.
//! The LDM file is written by tests/reference/ldm_write_tiny.py, whose key mapping is checked
//! there against diffusers' own single-file converters.
mod common;

use negimg::pipeline::single_file::open_single_file;
use negimg::weights::TensorFile;
use tch::{Device, Kind};

#[test]
fn ldm_single_file_matches_diffusers_layout() {
    let dir = common::scratch("ldm_single_file");
    common::run_python("ldm_write_tiny.py", &[dir.to_str().unwrap()]);
    for file in ["ldm.safetensors", "ldm_old_clip.safetensors"] {
        let ckpt = open_single_file(&dir.join(file)).unwrap();
        let unet = TensorFile::open(dir.join("unet.safetensors")).unwrap();
        let vae = TensorFile::open(dir.join("vae.safetensors")).unwrap();
        let text = TensorFile::open(dir.join("text_encoder.safetensors")).unwrap();
        common::assert_same_tensors(ckpt.unet().unwrap().as_ref(), &unet, file);
        common::assert_same_tensors(ckpt.vae().unwrap().as_ref(), &vae, file);
        common::assert_same_tensors(ckpt.text_encoder().unwrap().as_ref(), &text, file);
    }
    // The VAE attention is stored as 1x1 convs and read as linear weights.
    let ckpt = open_single_file(&dir.join("ldm.safetensors")).unwrap();
    let vae = ckpt.vae().unwrap();
    assert_eq!(
        vae.shape("decoder.mid_block.attentions.0.to_q.weight"),
        Some(vec![64, 64])
    );

    // A diffusers-layout file is not a single-file checkpoint: the error says what to do.
    let err = open_single_file(&dir.join("unet.safetensors"))
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("model.diffusion_model") && msg.contains("unet.safetensors"),
        "{msg}"
    );
}

#[test]
fn ldm_pickled_ckpt_is_refused_with_conversion_command() {
    let dir = common::scratch("ldm_ckpt");
    let path = dir.join("model.ckpt");
    std::fs::write(&path, b"not read").unwrap();
    let msg = format!("{:#}", open_single_file(&path).err().unwrap());
    assert!(
        msg.contains("model.ckpt") && msg.contains("safetensors") && msg.contains("python -c"),
        "{msg}"
    );
}

#[test]
fn ldm_checkpoint_without_vae_names_the_missing_part() {
    let dir = common::scratch("ldm_no_vae");
    let path = dir.join("unet_only.safetensors");
    let w = tch::Tensor::zeros([4, 4, 3, 3], (Kind::Float, Device::Cpu));
    tch::Tensor::write_safetensors(
        &[("model.diffusion_model.input_blocks.0.0.weight", w)],
        &path,
    )
    .unwrap();
    let ckpt = open_single_file(&path).unwrap();
    assert!(ckpt.unet().unwrap().shape("conv_in.weight").is_some());
    let msg = format!("{:#}", ckpt.vae().err().unwrap());
    assert!(
        msg.contains("no VAE") && msg.contains("unet_only.safetensors"),
        "{msg}"
    );
}
