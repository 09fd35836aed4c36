//! transformers' `CLIPModel` (text and vision towers with their projections) for scoring:
//! CLIP-I (image-image cosine) and CLIP-T (image-text cosine).
use super::clip_text::{ClipTextConfig, ClipTextModel, save_model, weights_file};
use super::clip_vision::{ClipVisionConfig, ClipVisionTransformer};
use super::preprocess::{CLIP_MEAN, CLIP_STD};
use crate::weights;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn, nn::Module};

fn default_projection_dim() -> i64 {
    512
}

fn default_logit_scale() -> f64 {
    2.6592
}

/// transformers' `CLIPConfig`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipConfig {
    #[serde(default)]
    pub text_config: ClipTextConfig,
    #[serde(default)]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "default_projection_dim")]
    pub projection_dim: i64,
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f64,
}

impl ClipConfig {
    /// openai/clip-vit-large-patch14, torchmetrics' CLIPScore model.
    pub fn vit_l14() -> Self {
        ClipConfig {
            text_config: ClipTextConfig::vit_l14(),
            vision_config: ClipVisionConfig::vit_l14(),
            projection_dim: 768,
            logit_scale_init_value: default_logit_scale(),
        }
    }

    pub fn tiny() -> Self {
        ClipConfig {
            text_config: ClipTextConfig::tiny(),
            vision_config: ClipVisionConfig::tiny(),
            projection_dim: 16,
            logit_scale_init_value: default_logit_scale(),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        weights::config_json::read(path, "CLIPConfig")
    }

    /// A `config.json` that `CLIPModel.from_pretrained` loads.
    pub fn to_config_json(&self) -> serde_json::Value {
        let mut text = self.text_config.to_config_json();
        text["projection_dim"] = self.projection_dim.into();
        let mut vision = self.vision_config.to_config_json();
        vision["projection_dim"] = self.projection_dim.into();
        serde_json::json!({
            "model_type": "clip",
            "architectures": ["CLIPModel"],
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": text,
            "vision_config": vision,
        })
    }
}

pub struct ClipModel {
    text_model: ClipTextModel,
    vision_model: ClipVisionTransformer,
    text_projection: nn::Linear,
    visual_projection: nn::Linear,
    logit_scale: Tensor,
    image_size: usize,
}

impl ClipModel {
    pub fn new(vs: nn::Path, cfg: &ClipConfig) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        ClipModel {
            text_model: ClipTextModel::new(&vs / "text_model", t),
            vision_model: ClipVisionTransformer::new(&vs / "vision_model", v),
            text_projection: nn::linear(
                &vs / "text_projection",
                t.hidden_size,
                cfg.projection_dim,
                no_bias,
            ),
            visual_projection: nn::linear(
                &vs / "visual_projection",
                v.hidden_size,
                cfg.projection_dim,
                no_bias,
            ),
            logit_scale: vs.var(
                "logit_scale",
                &[],
                nn::Init::Const(cfg.logit_scale_init_value),
            ),
            image_size: v.image_size as usize,
        }
    }

    /// Loads a `CLIPModel` folder (config.json + model.safetensors), e.g. openai/clip-vit-large-patch14.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg = ClipConfig::from_file(&dir.join("config.json"))?;
        let file = weights::TensorFile::open(weights_file(dir)?)?;
        weights::build_and_load(
            &file,
            device,
            kind,
            weights::safetensors_io::with_or_without_prefix(&file, "clip"),
            |root| Ok(ClipModel::new(root, &cfg)),
        )
        .with_context(|| format!("CLIP model {}", dir.display()))
    }

    /// Side of the square pixel input.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// `get_text_features`: projected pooled text states `[B, proj]` (not normalized).
    pub fn text_embeds(&self, ids: &Tensor) -> Tensor {
        let hidden = self.text_model.forward(ids);
        self.text_projection
            .forward(&self.text_model.pooled(ids, &hidden))
    }

    /// `get_image_features`: projected pooled class token `[B, proj]` (not normalized).
    pub fn image_embeds(&self, pixels: &Tensor) -> Tensor {
        let (_, _, pooled) = self.vision_model.forward(pixels);
        self.visual_projection.forward(&pooled)
    }

    /// The vision tower's `last_hidden_state` without the class token: the patch tokens
    /// `[B, patches, hidden]` (before the post-norm, as transformers returns them).
    pub fn patch_tokens(&self, pixels: &Tensor) -> Tensor {
        let (last, _, _) = self.vision_model.forward(pixels);
        let n = last.size()[1];
        last.narrow(1, 1, n - 1)
    }

    /// `exp(logit_scale)`, the temperature of CLIP's logits (100 for trained models).
    pub fn logit_scale(&self) -> f64 {
        self.logit_scale.exp().double_value(&[])
    }
}

/// Writes a complete scorer folder with seeded random weights: `config.json`,
/// `model.safetensors`, `preprocessor_config.json` and the tokenizer files built from
/// open_clip's `vocab_gz` (as in a Hugging Face CLIP repository).
pub fn write_random_model(dir: &Path, cfg: &ClipConfig, seed: i64, vocab_gz: &Path) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        ClipModel::new(root, cfg);
        Ok(())
    })?;
    save_model(dir, &cfg.to_config_json(), &vs)?;
    let size = cfg.vision_config.image_size;
    let processor = serde_json::json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true, "size": {"shortest_edge": size}, "resample": 3,
        "do_center_crop": true, "crop_size": {"height": size, "width": size},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0,
        "do_normalize": true, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "do_convert_rgb": true,
    });
    let path = dir.join("preprocessor_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&processor)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    super::tokenizer::write_tokenizer_folder(dir, vocab_gz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::clip_text::Activation;
    use crate::models::clip_vision::ClipVisionConfig;

    #[test]
    fn hidden_act_is_an_enum_and_others_fail_naming_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"text_config": {"hidden_act": "quick_gelu"}, "vision_config": {"hidden_act": "gelu"}}"#,
        )
        .unwrap();
        let cfg = ClipConfig::from_file(&path).unwrap();
        assert_eq!(cfg.text_config.hidden_act, Activation::QuickGelu);
        assert_eq!(cfg.vision_config.hidden_act, Activation::Gelu);
        assert_eq!(
            cfg.to_config_json()["text_config"]["hidden_act"],
            "quick_gelu"
        );
        std::fs::write(&path, r#"{"vision_config": {"hidden_act": "relu"}}"#).unwrap();
        let msg = format!("{:#}", ClipConfig::from_file(&path).unwrap_err());
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(r#"key "vision_config.hidden_act""#), "{msg}");
        assert!(
            msg.contains("`quick_gelu`") && msg.contains("`gelu`"),
            "{msg}"
        );
        std::fs::write(&path, r#"{"hidden_act": "gelu_typo"}"#).unwrap();
        let msg = format!("{:#}", ClipVisionConfig::from_file(&path).unwrap_err());
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(r#"key "hidden_act""#),
            "{msg}"
        );
    }
}
