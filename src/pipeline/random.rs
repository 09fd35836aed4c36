//! Random-weight model sets at the shapes of a preset, built in memory: for speed benchmarks
//! and tests, without files.
use super::Pipeline;
use super::conditioning::{Adapter, Encoders};
use super::decode::Decoder;
use super::source::SecondTextEncoder;
use crate::models::clip_text::{
    Activation, ClipTextConfig, ClipTextModel, ClipTextModelWithProjection,
};
use crate::models::clip_vision::{ClipVisionConfig, ClipVisionModelWithProjection};
use crate::models::ip_adapter::{AdapterFile, ImageProj};
use crate::models::tokenizer::{ClipTokenizer, find_open_clip_vocab};
use crate::models::unet::{IpLayout, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig, VaeParts};
use crate::params::AdapterKind;
use crate::sampling::SchedulerConfig;
use anyhow::{Result, bail};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, nn};

/// Shapes of a random-weight model set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RandomPreset {
    /// Small models for CPU tests: a few MB, fast at 64x64.
    Tiny,
    /// As `tiny`, with a UNet of SD1.5's block layout (16 cross-attention blocks), so that
    /// the per-block presets (`blocks = "style"`) run on it.
    #[serde(rename = "tiny_sd15")]
    TinySd15,
    /// The real shapes: SD1.5 UNet/VAE/text encoder, ViT-H/14 image encoder, ip-adapter_sd15.
    Sd15,
    /// SDXL's layout at tiny widths: two text encoders (the second with a projection), a
    /// `text_time` UNet with two transformer layers in its deepest block, the SDXL VAE's
    /// scaling factor, a tiny ViT-H-shaped image encoder (the `_vit-h` SDXL adapters).
    #[serde(rename = "tiny_sdxl")]
    TinySdxl,
    /// The real shapes: SDXL base UNet/VAE, CLIP ViT-L and OpenCLIP ViT-bigG text encoders,
    /// ViT-H/14 image encoder, ip-adapter_sdxl_vit-h.
    Sdxl,
}

impl std::str::FromStr for RandomPreset {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<RandomPreset> {
        match s {
            "tiny" => Ok(RandomPreset::Tiny),
            "tiny_sd15" => Ok(RandomPreset::TinySd15),
            "sd15" => Ok(RandomPreset::Sd15),
            "tiny_sdxl" => Ok(RandomPreset::TinySdxl),
            "sdxl" => Ok(RandomPreset::Sdxl),
            other => bail!("{other:?} is not a preset: tiny, tiny_sd15, sd15, tiny_sdxl, sdxl"),
        }
    }
}

pub struct RandomShapes {
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub text: ClipTextConfig,
    /// SDXL's second text encoder (CLIPTextModelWithProjection).
    pub text_2: Option<ClipTextConfig>,
    pub vision: ClipVisionConfig,
}

impl RandomPreset {
    pub fn shapes(self) -> RandomShapes {
        match self {
            RandomPreset::Tiny => RandomShapes {
                unet: UNet2DConditionConfig::tiny(),
                vae: AutoencoderKLConfig::tiny(),
                text: ClipTextConfig::tiny(),
                text_2: None,
                vision: ClipVisionConfig::tiny(),
            },
            RandomPreset::TinySd15 => RandomShapes {
                unet: UNet2DConditionConfig::tiny_sd15_layout(),
                ..RandomPreset::Tiny.shapes()
            },
            RandomPreset::Sd15 => RandomShapes {
                unet: UNet2DConditionConfig::sd15(),
                vae: AutoencoderKLConfig::sd15(),
                text: ClipTextConfig::sd15(),
                text_2: None,
                vision: ClipVisionConfig::vit_h(),
            },
            RandomPreset::TinySdxl => RandomShapes {
                unet: UNet2DConditionConfig::tiny_sdxl(),
                vae: AutoencoderKLConfig {
                    scaling_factor: SDXL_VAE_SCALING_FACTOR,
                    ..AutoencoderKLConfig::tiny()
                },
                text: ClipTextConfig::tiny(),
                text_2: Some(ClipTextConfig {
                    projection_dim: 32,
                    hidden_act: Activation::Gelu,
                    ..ClipTextConfig::tiny()
                }),
                vision: ClipVisionConfig::tiny(),
            },
            RandomPreset::Sdxl => RandomShapes {
                unet: UNet2DConditionConfig::sdxl(),
                vae: AutoencoderKLConfig {
                    scaling_factor: SDXL_VAE_SCALING_FACTOR,
                    ..AutoencoderKLConfig::sd15()
                },
                text: ClipTextConfig::sd15(),
                text_2: Some(ClipTextConfig::vit_big_g()),
                vision: ClipVisionConfig::vit_h(),
            },
        }
    }

    /// Whether the preset is an SDXL pipeline.
    pub fn is_sdxl(self) -> bool {
        matches!(self, RandomPreset::TinySdxl | RandomPreset::Sdxl)
    }

    /// The default image side of the preset (64 for tiny, 512 for SD1.5).
    pub fn default_size(self) -> usize {
        match self {
            RandomPreset::Tiny | RandomPreset::TinySd15 | RandomPreset::TinySdxl => 64,
            RandomPreset::Sd15 => 512,
            RandomPreset::Sdxl => 1024,
        }
    }
}

const SDXL_VAE_SCALING_FACTOR: f64 = crate::models::vae::SDXL_SCALING_FACTOR;

/// Writes a random adapter of `kind` that fits `unet` and `vision`.
pub fn write_random_adapter(
    path: &Path,
    kind: AdapterKind,
    unet: &UNet2DConditionConfig,
    vision: &ClipVisionConfig,
    seed: i64,
) -> Result<()> {
    let embed_dim = crate::models::ip_adapter::embed_dim_for(kind, vision);
    crate::models::ip_adapter::write_random(
        path,
        kind,
        unet.context_dim(),
        embed_dim,
        &crate::models::unet::ip_attn_hidden_sizes(unet),
        seed,
    )
}

impl Pipeline {
    /// A pipeline of random weights built in memory (no files but the small adapter file,
    /// written to `scratch`), at the shapes of `preset`, with the one adapter `adapter`.
    pub fn random(
        preset: RandomPreset,
        adapter: AdapterKind,
        device: Device,
        kind: Kind,
        scratch: &Path,
    ) -> Result<Pipeline> {
        let shapes = preset.shapes();
        let store = || {
            let mut vs = nn::VarStore::new(device);
            vs.set_kind(kind);
            vs
        };
        // Building draws the initial weights from the global generator.
        let generator = crate::weights::random::global_generator();
        let (text_vs, unet_vs, vae_vs, enc_vs) = (store(), store(), store(), store());
        let text_encoder = ClipTextModel::new(text_vs.root() / "text_model", &shapes.text);
        let text_2_vs = store();
        let text_encoder_2 = match &shapes.text_2 {
            Some(cfg) => Some(SecondTextEncoder {
                tokenizer: ClipTokenizer::from_open_clip_vocab(&find_open_clip_vocab()?)?,
                model: ClipTextModelWithProjection::new(text_2_vs.root(), cfg),
            }),
            None => None,
        };
        let ip = Some(IpLayout::for_config(&shapes.unet));
        let unet = UNet2DConditionModel::new(unet_vs.root(), &shapes.unet, ip)?;
        // With its encoder, for NegToMe's reference images.
        let vae = AutoencoderKL::new(vae_vs.root(), &shapes.vae, VaeParts::EncoderAndDecoder)?;
        let image_encoder = ClipVisionModelWithProjection::new(enc_vs.root(), &shapes.vision);
        drop(generator);
        for vs in [&text_vs, &text_2_vs, &unet_vs, &vae_vs, &enc_vs] {
            vs.variables().values().for_each(|v| {
                let _ = v.shallow_clone().set_requires_grad(false);
            });
        }
        let tokenizer = ClipTokenizer::from_open_clip_vocab(&find_open_clip_vocab()?)?;
        let path = scratch.join(format!("random-{adapter}.safetensors"));
        write_random_adapter(&path, adapter, &shapes.unet, &shapes.vision, 7)?;
        let file = AdapterFile::open(&path)?;
        let proj = ImageProj::load(&file, device, kind)?;
        let adapters = HashMap::from([(adapter, Adapter { file, proj })]);
        let encoders = Encoders {
            tokenizer,
            text_encoder,
            force_zeros_for_empty_prompt: text_encoder_2.is_some(),
            text_encoder_2,
            image_encoder,
            adapters,
        };
        let decoder = Decoder::new(vae, None, device, kind);
        let scheduler_cfg = SchedulerConfig::sd15_ddim();
        Ok(Pipeline::assemble(
            device,
            kind,
            encoders,
            unet,
            decoder,
            scheduler_cfg,
        ))
    }
}
