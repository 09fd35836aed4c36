//! Weight files: safetensors into tch VarStores with shape checks and precise errors.
pub mod config_json;
pub mod hub;
mod hub_client;
pub mod pipeline_folder;
pub mod random;
pub mod safetensors_io;
pub mod torch_bin;

use anyhow::Result;
pub use safetensors_io::{TensorFile, TensorSource, load_var_store};
use std::path::PathBuf;
use tch::{Device, Kind, nn};

/// Builds a model into a new VarStore on `device` in `kind` and loads it from `source`:
/// `build` creates the variables under the root, `key_for` names the tensor of each variable
/// as in [`load_var_store`] (which checks every shape). The weights are frozen: negimg only
/// runs models.
pub fn build_and_load<M>(
    source: &dyn TensorSource,
    device: Device,
    kind: Kind,
    key_for: impl Fn(&str) -> Option<String>,
    build: impl FnOnce(nn::Path) -> Result<M>,
) -> Result<M> {
    let mut vs = nn::VarStore::new(device);
    vs.set_kind(kind);
    // Building draws initial weights (overwritten by the load) from the global generator.
    let model = {
        let _generator = random::global_generator();
        build(vs.root())?
    };
    vs.freeze();
    load_var_store(&vs, source, key_for)?;
    Ok(model)
}

/// The `key_for` of a model whose variables have the file's names.
pub fn same_name(name: &str) -> Option<String> {
    Some(name.to_string())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn build_and_load_fills_a_frozen_model_of_the_kind_and_names_bad_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let weight = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape([3, 2]);
        let bias = Tensor::from_slice(&[0.5f32, -0.5, 0.25]);
        Tensor::write_safetensors(&[("lin.weight", &weight), ("lin.bias", &bias)], &path).unwrap();
        let file = TensorFile::open(&path).unwrap();
        let build = |width: i64| {
            move |root: nn::Path| Ok(nn::linear(root / "lin", width, 3, Default::default()))
        };
        let lin = build_and_load(&file, Device::Cpu, Kind::Double, same_name, build(2)).unwrap();
        assert_eq!(lin.ws.kind(), Kind::Double);
        assert!(!lin.ws.requires_grad() && !lin.bs.as_ref().unwrap().requires_grad());
        assert_eq!(lin.ws.to_kind(Kind::Float), weight);
        // A model of other widths: the error names the file and the tensor.
        let msg = build_and_load(&file, Device::Cpu, Kind::Float, same_name, build(4))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("\"lin.weight\""),
            "{msg}"
        );
    }
}
