//! Networks, one file each; variable paths mirror the checkpoint keys.
pub mod aesthetic;
pub mod attention;
pub mod attention_probe;
pub mod clip_model;
pub mod clip_text;
pub mod clip_vision;
pub mod coder_flops;
pub mod dinov2;
pub mod embeddings;
pub mod ip_adapter;
pub mod preprocess;
pub mod resnet;
pub mod tokenizer;
pub mod unet;
pub mod unet_blocks;
pub mod unet_flops;
pub mod vae;
