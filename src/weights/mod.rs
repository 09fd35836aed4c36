//! Weight files: safetensors into tch VarStores with shape checks and precise errors.
pub mod config_json;
pub mod hub;
pub mod ldm;
pub mod pipeline_folder;
pub mod random;
pub mod safetensors_io;

pub use safetensors_io::{TensorFile, TensorSource, load_var_store};
use std::path::PathBuf;

/// Where `models init-random` and relative model names go: `$NEGIMG_MODELS` or `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("NEGIMG_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// The Hugging Face hub cache, as huggingface_hub finds it: `$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}
