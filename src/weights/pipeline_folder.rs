//! A diffusers-layout pipeline folder: `model_index.json`, `unet/`, `vae/`, `text_encoder/`,
//! `tokenizer/`, `scheduler/`.
//!
//! Weights are `*.safetensors`; the `*.fp16.safetensors` variant is used when it is the only
//! one, or when fp16 is asked for and it exists. A folder with only pickled `.bin` weights is
//! read through a safetensors copy ([`super::torch_bin`]).
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// One model component: its folder, `config.json` and weight file.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl Component {
    /// The component in `dir`, whose weights are `<stem>.safetensors` or
    /// `<stem>.fp16.safetensors` (diffusers: `diffusion_pytorch_model`, transformers: `model`).
    pub fn open(dir: &Path, stem: &str, prefer_fp16: bool) -> Result<Component> {
        let config = dir.join("config.json");
        if !config.is_file() {
            bail!("{}: config.json is missing", dir.display());
        }
        let weights = find_weights(dir, stem, prefer_fp16)?;
        Ok(Component {
            dir: dir.to_path_buf(),
            config,
            weights,
        })
    }
}

/// The weight file of the model in `dir`: `<stem>.safetensors` or `<stem>.fp16.safetensors`
/// (the fp16 one first with `prefer_fp16`), else the pickled `.bin` of the same name
/// (`pytorch_model.bin` for transformers' `model`), which [`super::TensorFile`] reads through
/// a converted copy.
pub fn find_weights(dir: &Path, stem: &str, prefer_fp16: bool) -> Result<PathBuf> {
    let bin_stem = if stem == "model" {
        "pytorch_model"
    } else {
        stem
    };
    let ordered = |full: String, half: String| {
        if prefer_fp16 {
            [half, full]
        } else {
            [full, half]
        }
    };
    let candidates = ordered(
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
    )
    .into_iter()
    .chain(ordered(
        format!("{bin_stem}.bin"),
        format!("{bin_stem}.fp16.bin"),
    ));
    for name in candidates {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    if dir.join(format!("{stem}.safetensors.index.json")).is_file() {
        bail!(
            "{}: sharded weights ({stem}-0000x-of-0000y.safetensors) are not supported; \
             SD1.5 components are single files",
            dir.display()
        );
    }
    bail!(
        "{}: no {stem}.safetensors, {stem}.fp16.safetensors or {bin_stem}.bin found",
        dir.display()
    )
}

/// An opened diffusers pipeline folder.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineFolder {
    pub root: PathBuf,
    pub unet: Component,
    pub vae: Component,
    pub text_encoder: Component,
    /// `tokenizer/` (vocab.json and merges.txt, or tokenizer.json).
    pub tokenizer: PathBuf,
    /// `scheduler/scheduler_config.json`, when present.
    pub scheduler_config: Option<PathBuf>,
    /// SDXL's second text encoder (`text_encoder_2/`, CLIPTextModelWithProjection) and
    /// its `tokenizer_2/`, when model_index.json lists them.
    pub text_encoder_2: Option<(Component, PathBuf)>,
    /// model_index.json's `force_zeros_for_empty_prompt` (diffusers' SDXL default: true;
    /// false for pipelines without the key and without a second text encoder).
    pub force_zeros_for_empty_prompt: bool,
}

/// Checks that `dir` holds a tokenizer: vocab.json and merges.txt, or tokenizer.json
/// (transformers 5 saves tokenizer.json alone).
fn check_tokenizer(root: &Path, name: &str) -> Result<PathBuf> {
    let dir = root.join(name);
    if !dir.join("tokenizer.json").is_file() {
        for file in ["vocab.json", "merges.txt"] {
            if !dir.join(file).is_file() {
                bail!(
                    "{}: {name}/{file} is missing (and there is no tokenizer.json)",
                    root.display()
                );
            }
        }
    }
    Ok(dir)
}

/// A model_index.json of diffusers' layout: `StableDiffusionPipeline` without safety checker,
/// or with `sdxl` `StableDiffusionXLPipeline` (its second text encoder and tokenizer, and
/// `force_zeros_for_empty_prompt`), as stabilityai/stable-diffusion-xl-base-1.0's.
pub fn model_index_json(sdxl: bool, force_zeros_for_empty_prompt: bool) -> serde_json::Value {
    let mut index = serde_json::json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    });
    if sdxl {
        let extra = serde_json::json!({
            "_class_name": "StableDiffusionXLPipeline",
            "force_zeros_for_empty_prompt": force_zeros_for_empty_prompt,
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
        });
        if let (Some(index), Some(extra)) = (index.as_object_mut(), extra.as_object()) {
            index.extend(extra.clone());
            index.remove("requires_safety_checker");
            index.remove("safety_checker");
        }
    }
    index
}

/// model_index.json's `force_zeros_for_empty_prompt` (at `index`), `default` where it has
/// none (diffusers' SDXL pipeline: true; pipelines with one text encoder do not have it).
pub fn force_zeros_for_empty_prompt(index: &Path, default: bool) -> Result<bool> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", index.display()))?;
    force_zeros_of(&json, index, default)
}

fn force_zeros_of(index_json: &serde_json::Value, index: &Path, default: bool) -> Result<bool> {
    match &index_json["force_zeros_for_empty_prompt"] {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::Null => Ok(default),
        other => bail!(
            "{}: key \"force_zeros_for_empty_prompt\": expected true or false, found {other}",
            index.display()
        ),
    }
}

impl PipelineFolder {
    /// Opens `dir`, preferring full-precision weights.
    pub fn open(dir: &Path) -> Result<PipelineFolder> {
        Self::open_with(dir, false)
    }

    /// Opens `dir`; with `prefer_fp16`, `*.fp16.safetensors` variants win where both exist.
    pub fn open_with(dir: &Path, prefer_fp16: bool) -> Result<PipelineFolder> {
        let index = dir.join("model_index.json");
        let text = std::fs::read_to_string(&index).with_context(|| {
            format!(
                "{}: not a diffusers pipeline folder (cannot read model_index.json)",
                dir.display()
            )
        })?;
        let index_json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", index.display()))?;
        let tokenizer = check_tokenizer(dir, "tokenizer")?;
        let listed = |key: &str| index_json[key].get(1).is_some_and(|v| !v.is_null());
        let text_encoder_2 = if listed("text_encoder_2") {
            let component = Component::open(&dir.join("text_encoder_2"), "model", prefer_fp16)?;
            Some((component, check_tokenizer(dir, "tokenizer_2")?))
        } else {
            None
        };
        let force_zeros_for_empty_prompt =
            force_zeros_of(&index_json, &index, text_encoder_2.is_some())?;
        let scheduler_config = dir.join("scheduler/scheduler_config.json");
        Ok(PipelineFolder {
            root: dir.to_path_buf(),
            unet: Component::open(&dir.join("unet"), "diffusion_pytorch_model", prefer_fp16)?,
            vae: Component::open(&dir.join("vae"), "diffusion_pytorch_model", prefer_fp16)?,
            text_encoder: Component::open(&dir.join("text_encoder"), "model", prefer_fp16)?,
            tokenizer,
            scheduler_config: scheduler_config.is_file().then_some(scheduler_config),
            text_encoder_2,
            force_zeros_for_empty_prompt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"{}").unwrap();
    }

    #[test]
    fn finds_components_and_prefers_fp16_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(&d.join("model_index.json"));
        for f in ["tokenizer/vocab.json", "tokenizer/merges.txt"] {
            touch(&d.join(f));
        }
        for c in ["unet", "vae"] {
            touch(&d.join(c).join("config.json"));
            touch(&d.join(c).join("diffusion_pytorch_model.safetensors"));
            touch(&d.join(c).join("diffusion_pytorch_model.fp16.safetensors"));
        }
        touch(&d.join("text_encoder/config.json"));
        touch(&d.join("text_encoder/model.fp16.safetensors"));
        let f = PipelineFolder::open(d).unwrap();
        assert!(
            f.unet
                .weights
                .ends_with("unet/diffusion_pytorch_model.safetensors")
        );
        assert!(f.text_encoder.weights.ends_with("model.fp16.safetensors"));
        assert!(f.scheduler_config.is_none());
        let f16 = PipelineFolder::open_with(d, true).unwrap();
        assert!(
            f16.vae
                .weights
                .ends_with("diffusion_pytorch_model.fp16.safetensors")
        );
        // transformers' pickled weights are pytorch_model.bin, used when nothing else is there.
        std::fs::remove_file(d.join("text_encoder/model.fp16.safetensors")).unwrap();
        let err = PipelineFolder::open(d).unwrap_err().to_string();
        assert!(err.contains("pytorch_model.bin"), "{err}");
        touch(&d.join("text_encoder/pytorch_model.bin"));
        let f = PipelineFolder::open(d).unwrap();
        assert!(f.text_encoder.weights.ends_with("pytorch_model.bin"));
        let err = PipelineFolder::open(&d.join("unet"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model_index.json"), "{err}");
    }
}
