//! CLIP vision tower as transformers' `CLIPVisionModelWithProjection` (keys `vision_model.*`,
//! `visual_projection.weight`): the IP-Adapter image encoders (OpenCLIP ViT-H/14 and
//! ViT-bigG/14, one network at two sets of widths read from config.json).
use super::clip_text::{Activation, Encoder, EncoderShape, layer_norm, save_model, weights_file};
use crate::weights::{self, TensorSource};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn, nn::Module};

/// transformers' `CLIPVisionConfig` (the fields the network uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub projection_dim: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_channels: i64,
    pub image_size: i64,
    pub patch_size: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    /// transformers' defaults.
    fn default() -> Self {
        ClipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// OpenCLIP ViT-H/14, the SD1.5 IP-Adapter image encoder (h94/IP-Adapter models/image_encoder).
    pub fn vit_h() -> Self {
        ClipVisionConfig {
            hidden_size: 1280,
            intermediate_size: 5120,
            projection_dim: 1024,
            num_hidden_layers: 32,
            num_attention_heads: 16,
            patch_size: 14,
            hidden_act: Activation::Gelu,
            ..Default::default()
        }
    }

    /// OpenCLIP ViT-bigG/14 as h94/IP-Adapter's `sdxl_models/image_encoder/config.json` has
    /// it: the encoder of ip-adapter_sdxl and ip-adapter_sd15_vit-G (same keys as ViT-H,
    /// wider: 1664 hidden, 1280 projected, 48 layers).
    pub fn vit_big_g() -> Self {
        ClipVisionConfig {
            hidden_size: 1664,
            intermediate_size: 8192,
            projection_dim: 1280,
            num_hidden_layers: 48,
            num_attention_heads: 16,
            patch_size: 14,
            hidden_act: Activation::Gelu,
            ..Default::default()
        }
    }

    /// The SD1.5 IP-Adapter image encoder ([`Self::vit_h`]).
    pub fn sd15() -> Self {
        Self::vit_h()
    }

    /// OpenAI CLIP ViT-L/14 vision tower (the scorer).
    pub fn vit_l14() -> Self {
        ClipVisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            projection_dim: 768,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            patch_size: 14,
            ..Default::default()
        }
    }

    /// The tiny encoder of tools/diffusers_baseline.py --tiny.
    pub fn tiny() -> Self {
        ClipVisionConfig {
            hidden_size: 32,
            intermediate_size: 37,
            projection_dim: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            patch_size: 14,
            ..Default::default()
        }
    }

    pub fn shape(&self) -> EncoderShape {
        EncoderShape {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }

    /// Image tokens: one per patch plus the class token (257 for 224 / 14).
    pub fn num_positions(&self) -> i64 {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        weights::config_json::read(path, "CLIPVisionConfig")
    }

    /// A `config.json` that `CLIPVisionModelWithProjection.from_pretrained` loads.
    pub fn to_config_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(self).expect("config serializes");
        json["model_type"] = "clip_vision_model".into();
        json["architectures"] = serde_json::json!(["CLIPVisionModelWithProjection"]);
        json
    }
}

/// `CLIPVisionModel` (under `vision_model`): embeddings, pre-norm, encoder, pooled class token.
pub struct ClipVisionTransformer {
    class_embedding: Tensor,
    patch_embedding: nn::Conv2D,
    position_embedding: nn::Embedding,
    pre_layrnorm: nn::LayerNorm,
    encoder: Encoder,
    post_layernorm: nn::LayerNorm,
    num_positions: i64,
}

impl ClipVisionTransformer {
    pub fn new(vs: nn::Path, cfg: &ClipVisionConfig) -> Self {
        let emb = &vs / "embeddings";
        let conv = nn::ConvConfig {
            stride: cfg.patch_size,
            bias: false,
            ..Default::default()
        };
        ClipVisionTransformer {
            class_embedding: emb.randn("class_embedding", &[cfg.hidden_size], 0.0, 1.0),
            patch_embedding: nn::conv2d(
                &emb / "patch_embedding",
                cfg.num_channels,
                cfg.hidden_size,
                cfg.patch_size,
                conv,
            ),
            position_embedding: nn::embedding(
                &emb / "position_embedding",
                cfg.num_positions(),
                cfg.hidden_size,
                Default::default(),
            ),
            // "layrnorm" is transformers' spelling of the key.
            pre_layrnorm: layer_norm(&vs / "pre_layrnorm", cfg.hidden_size, cfg.layer_norm_eps),
            encoder: Encoder::new(&vs / "encoder", &cfg.shape()),
            post_layernorm: layer_norm(&vs / "post_layernorm", cfg.hidden_size, cfg.layer_norm_eps),
            num_positions: cfg.num_positions(),
        }
    }

    /// `(last_hidden_state, hidden_states[-2], pooler_output)` for pixels `[B, 3, S, S]`.
    pub fn forward(&self, pixels: &Tensor) -> (Tensor, Tensor, Tensor) {
        let b = pixels.size()[0];
        let patches = self
            .patch_embedding
            .forward(pixels)
            .flatten(2, -1)
            .transpose(1, 2);
        let class = self
            .class_embedding
            .view([1, 1, -1])
            .expand([b, 1, -1], false)
            .to_kind(patches.kind());
        let positions = Tensor::arange(self.num_positions, (Kind::Int64, pixels.device()));
        let x = Tensor::cat(&[class, patches], 1) + self.position_embedding.forward(&positions);
        let x = self.pre_layrnorm.forward(&x);
        let (last, penultimate) = self.encoder.forward(&x, false);
        let pooled = self.post_layernorm.forward(&last.select(1, 0));
        (last, penultimate, pooled)
    }
}

/// What the image encoder gives the IP-Adapter projections.
pub struct VisionOutput {
    /// `visual_projection(pooled)` `[B, projection_dim]` (base adapter).
    pub image_embeds: Tensor,
    /// transformers' `hidden_states[-2]` `[B, 257, hidden]`: the input of the last encoder
    /// layer (`hidden_states[0]` is the pre-normed embedding), used by IP-Adapter Plus.
    pub penultimate: Tensor,
    /// `pooler_output` `[B, hidden]`: post-normed class token.
    pub pooled: Tensor,
}

pub struct ClipVisionModelWithProjection {
    vision_model: ClipVisionTransformer,
    visual_projection: nn::Linear,
    config: ClipVisionConfig,
}

impl ClipVisionModelWithProjection {
    /// `vs` is the model root (keys `vision_model.*`, `visual_projection.weight`).
    pub fn new(vs: nn::Path, cfg: &ClipVisionConfig) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        ClipVisionModelWithProjection {
            vision_model: ClipVisionTransformer::new(&vs / "vision_model", cfg),
            visual_projection: nn::linear(
                &vs / "visual_projection",
                cfg.hidden_size,
                cfg.projection_dim,
                no_bias,
            ),
            config: cfg.clone(),
        }
    }

    /// Loads an image-encoder folder (config.json + model.safetensors).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg = ClipVisionConfig::from_file(&dir.join("config.json"))?;
        let file = weights::TensorFile::open(weights_file(dir)?)?;
        Self::load_from(&file, &cfg, device, kind)
    }

    pub fn load_from(
        file: &dyn TensorSource,
        cfg: &ClipVisionConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        weights::build_and_load(
            file,
            device,
            kind,
            weights::safetensors_io::with_or_without_prefix(file, "vision_model"),
            |root| Ok(Self::new(root, cfg)),
        )
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    pub fn image_size(&self) -> usize {
        self.config.image_size as usize
    }

    pub fn forward(&self, pixels: &Tensor) -> VisionOutput {
        let (_, penultimate, pooled) = self.vision_model.forward(pixels);
        VisionOutput {
            image_embeds: self.visual_projection.forward(&pooled),
            penultimate,
            pooled,
        }
    }
}

/// Writes an image-encoder folder with seeded random weights: `config.json` + `model.safetensors`.
pub fn write_random_model(dir: &Path, cfg: &ClipVisionConfig, seed: i64) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        ClipVisionModelWithProjection::new(root, cfg);
        Ok(())
    })?;
    save_model(dir, &cfg.to_config_json(), &vs)
}
