//! Networks, one file each; variable paths mirror the checkpoint keys.
pub mod tokenizer;
pub mod clip_model;
pub mod clip_text;
pub mod clip_vision;
pub mod preprocess;
pub mod attention;
pub mod embeddings;
pub mod resnet;
pub mod unet;
pub mod unet_blocks;
pub mod vae;
pub mod ip_adapter;
