//! Weight files: safetensors into tch VarStores with shape checks and precise errors.
pub mod hub;
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
/// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    hub_cache_from(&|name| std::env::var_os(name).filter(|v| !v.is_empty()))
}

fn hub_cache_from(var: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dir) = var("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_default()).join(".cache"));
    cache.join("huggingface").join("hub")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_cache_honours_the_variables_in_huggingface_hub_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        const ALL: &[(&str, &str)] = &[
            ("HF_HUB_CACHE", "/c"),
            ("HF_HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(hub_cache_from(&env(ALL)), PathBuf::from("/c"));
        assert_eq!(hub_cache_from(&env(&ALL[1..])), PathBuf::from("/h/hub"));
        assert_eq!(
            hub_cache_from(&env(&ALL[2..])),
            PathBuf::from("/x/huggingface/hub")
        );
        assert_eq!(
            hub_cache_from(&env(&ALL[3..])),
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
    }
}
