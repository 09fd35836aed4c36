//! Weight files: safetensors into tch VarStores with shape checks and precise errors.
pub mod hub;
mod hub_client;
pub mod ldm;
pub mod pipeline_folder;
pub mod random;
pub mod safetensors_io;
pub mod torch_bin;

pub use safetensors_io::{TensorFile, TensorSource, load_var_store};
use std::path::PathBuf;

/// Where `models init-random` and relative model names go: `$NEGIMG_MODELS` or `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("NEGIMG_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// huggingface_hub's home folder: `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface`.
pub fn hf_home() -> PathBuf {
    if let Some(home) = std::env::var_os("HF_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(xdg).join("huggingface");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface")
}

/// The Hugging Face hub cache, as huggingface_hub finds it: `$HF_HUB_CACHE`, else
/// [`hf_home`]`/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    hf_home().join("hub")
}
