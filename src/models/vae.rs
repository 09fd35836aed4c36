//! `AutoencoderKL` (diffusers 0.42): the decoder that turns latents into images, and the
//! encoder (built only when asked for: generation needs the decoder alone).
use crate::models::resnet::{ActFn, conv2d, group_norm};
use crate::models::unet::{component_files, save_component};
use crate::models::unet_blocks::{
    BlockCommon, CoderBlock2D, CoderBlockConfig, Resample, UNetMidBlock2D,
};
use crate::weights::{self, TensorFile, TensorSource, config_json};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn, nn::Module};

/// An encoder block of the VAE (diffusers' `down_block_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeDownBlockType {
    DownEncoderBlock2D,
}

/// A decoder block of the VAE (diffusers' `up_block_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeUpBlockType {
    UpDecoderBlock2D,
}

/// diffusers' `AutoencoderKL` config.json (missing keys take diffusers' defaults, unknown
/// keys are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoencoderKLConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub down_block_types: Vec<VaeDownBlockType>,
    pub up_block_types: Vec<VaeUpBlockType>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub act_fn: ActFn,
    pub latent_channels: i64,
    pub norm_num_groups: i64,
    pub sample_size: i64,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

/// The SDXL VAE's `scaling_factor` (stabilityai/sdxl-vae config.json).
pub const SDXL_SCALING_FACTOR: f64 = 0.13025;

impl Default for AutoencoderKLConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        AutoencoderKLConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![VaeDownBlockType::DownEncoderBlock2D],
            up_block_types: vec![VaeUpBlockType::UpDecoderBlock2D],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: ActFn::Silu,
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl AutoencoderKLConfig {
    fn with_channels(block_out_channels: Vec<i64>, sample_size: i64) -> Self {
        let n = block_out_channels.len();
        AutoencoderKLConfig {
            down_block_types: vec![VaeDownBlockType::DownEncoderBlock2D; n],
            up_block_types: vec![VaeUpBlockType::UpDecoderBlock2D; n],
            block_out_channels,
            layers_per_block: 2,
            sample_size,
            ..Default::default()
        }
    }

    /// The SD1.5 VAE: channels (128, 256, 512, 512), 8x downsampling, scale 0.18215.
    pub fn sd15() -> Self {
        Self::with_channels(vec![128, 256, 512, 512], 512)
    }

    /// The SDXL VAE (stabilityai/sdxl-vae `config.json`): SD1.5's network with its own
    /// scaling factor, for 1024-pixel images.
    pub fn sdxl() -> Self {
        AutoencoderKLConfig {
            scaling_factor: SDXL_SCALING_FACTOR,
            ..Self::with_channels(vec![128, 256, 512, 512], 1024)
        }
    }

    /// The tiny VAE of `diffusers_baseline.py --tiny`: channels (32, 64), so it downsamples
    /// by 2 only (a 64x64 image has 32x32 latents).
    pub fn tiny() -> Self {
        Self::with_channels(vec![32, 64], 64)
    }

    /// Image pixels per latent pixel along each side: 2^(blocks - 1).
    pub fn scale_factor(&self) -> i64 {
        1 << (self.block_out_channels.len().max(1) - 1)
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        config_json::read_valid(path, "AutoencoderKL config", "VAE config", Self::validate)
    }

    /// A config.json that diffusers' `AutoencoderKL.from_pretrained` loads.
    pub fn to_config_json(&self) -> String {
        config_json::diffusers_json(self, "AutoencoderKL")
    }

    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        ensure!(n > 0, "block_out_channels is empty");
        ensure!(
            self.down_block_types.len() == n && self.up_block_types.len() == n,
            "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have \
             the same length",
            self.down_block_types.len(),
            self.up_block_types.len()
        );
        for &c in &self.block_out_channels {
            ensure!(
                c % self.norm_num_groups == 0,
                "block_out_channels entry {c} is not a multiple of norm_num_groups {}",
                self.norm_num_groups
            );
        }
        Ok(())
    }

    fn common(&self) -> BlockCommon {
        BlockCommon {
            temb_channels: None,
            groups: self.norm_num_groups,
            eps: 1e-6,
        }
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: nn::Conv2D,
    down_blocks: Vec<CoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Encoder {
    fn new(vs: nn::Path, cfg: &AutoencoderKLConfig) -> Self {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let common = cfg.common();
        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { boc[0] } else { boc[i - 1] };
                let resample = if i + 1 < n {
                    Resample::Down
                } else {
                    Resample::None
                };
                CoderBlock2D::new(
                    &vs / "down_blocks" / i,
                    &CoderBlockConfig {
                        common,
                        in_channels: cin,
                        out_channels: boc[i],
                        layers: cfg.layers_per_block,
                        resample,
                    },
                )
            })
            .collect();
        Encoder {
            conv_in: conv2d(&vs / "conv_in", cfg.in_channels, boc[0], 3, 1, 1),
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                &vs / "mid_block",
                common,
                boc[n - 1],
                cfg.mid_block_add_attention,
            ),
            conv_norm_out: group_norm(&vs / "conv_norm_out", cfg.norm_num_groups, boc[n - 1], 1e-6),
            // Mean and log-variance of the latent distribution.
            conv_out: conv2d(
                &vs / "conv_out",
                boc[n - 1],
                2 * cfg.latent_channels,
                3,
                1,
                1,
            ),
        }
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut x = self.conv_in.forward(xs);
        for block in &self.down_blocks {
            x = block.forward(&x);
        }
        let x = self.mid_block.forward(&x);
        self.conv_out
            .forward(&self.conv_norm_out.forward(&x).silu())
    }
}

#[derive(Debug)]
struct Decoder {
    conv_in: nn::Conv2D,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<CoderBlock2D>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl Decoder {
    fn new(vs: nn::Path, cfg: &AutoencoderKLConfig) -> Self {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let common = cfg.common();
        let up_blocks = (0..n)
            .map(|i| {
                let r = n - 1 - i;
                let prev = if i == 0 { boc[n - 1] } else { boc[r + 1] };
                let resample = if i + 1 < n {
                    Resample::Up
                } else {
                    Resample::None
                };
                CoderBlock2D::new(
                    &vs / "up_blocks" / i,
                    &CoderBlockConfig {
                        common,
                        in_channels: prev,
                        out_channels: boc[r],
                        layers: cfg.layers_per_block + 1,
                        resample,
                    },
                )
            })
            .collect();
        Decoder {
            conv_in: conv2d(&vs / "conv_in", cfg.latent_channels, boc[n - 1], 3, 1, 1),
            mid_block: UNetMidBlock2D::new(
                &vs / "mid_block",
                common,
                boc[n - 1],
                cfg.mid_block_add_attention,
            ),
            up_blocks,
            conv_norm_out: group_norm(&vs / "conv_norm_out", cfg.norm_num_groups, boc[0], 1e-6),
            conv_out: conv2d(&vs / "conv_out", boc[0], cfg.out_channels, 3, 1, 1),
        }
    }
}

impl Module for Decoder {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut x = self.mid_block.forward(&self.conv_in.forward(xs));
        for block in &self.up_blocks {
            x = block.forward(&x);
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&x).silu())
    }
}

#[derive(Debug)]
pub struct AutoencoderKL {
    cfg: AutoencoderKLConfig,
    encoder: Option<(Encoder, Option<nn::Conv2D>)>,
    post_quant_conv: Option<nn::Conv2D>,
    decoder: Decoder,
}

/// The file key of a variable: diffusers' names, or for VAEs saved by diffusers before
/// 0.14 (e.g. stabilityai/sd-vae-ft-mse) the old mid-block attention names
/// `query`/`key`/`value`/`proj_attn`, which diffusers renames the same way when loading.
fn vae_key(source: &dyn TensorSource, name: &str) -> String {
    if source.shape(name).is_none() && name.contains(".attentions.") {
        for (new, old) in [
            (".to_q.", ".query."),
            (".to_k.", ".key."),
            (".to_v.", ".value."),
            (".to_out.0.", ".proj_attn."),
        ] {
            let legacy = name.replace(new, old);
            if legacy != name && source.shape(&legacy).is_some() {
                return legacy;
            }
        }
    }
    name.to_string()
}

/// The halves of the VAE to build: generation only decodes, so it leaves the encoder out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeParts {
    /// The decoder and `post_quant_conv`.
    DecoderOnly,
    /// Also the encoder and `quant_conv`, for [`AutoencoderKL::encode`].
    EncoderAndDecoder,
}

impl AutoencoderKL {
    /// Builds the decoder (and `post_quant_conv`), and the encoder (and `quant_conv`) when
    /// `parts` asks for it.
    pub fn new(vs: nn::Path, cfg: &AutoencoderKLConfig, parts: VaeParts) -> Result<Self> {
        cfg.validate()?;
        let latent = cfg.latent_channels;
        let encoder = (parts == VaeParts::EncoderAndDecoder).then(|| {
            let quant = cfg
                .use_quant_conv
                .then(|| conv2d(&vs / "quant_conv", 2 * latent, 2 * latent, 1, 1, 0));
            (Encoder::new(&vs / "encoder", cfg), quant)
        });
        Ok(AutoencoderKL {
            cfg: cfg.clone(),
            encoder,
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| conv2d(&vs / "post_quant_conv", latent, latent, 1, 1, 0)),
            decoder: Decoder::new(&vs / "decoder", cfg),
        })
    }

    pub fn config(&self) -> &AutoencoderKLConfig {
        &self.cfg
    }

    /// Whether [`encode`](Self::encode) is available.
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// Builds the VAE on `device` in `kind` and loads it from `source`.
    pub fn from_source(
        source: &dyn TensorSource,
        cfg: &AutoencoderKLConfig,
        device: Device,
        kind: Kind,
        parts: VaeParts,
    ) -> Result<Self> {
        let key_for = |name: &str| Some(vae_key(source, name));
        weights::build_and_load(source, device, kind, key_for, |root| {
            Self::new(root, cfg, parts)
        })
    }

    /// Loads a diffusers `vae/` folder (config.json + diffusion_pytorch_model[.fp16]
    /// .safetensors), or a weights file with config.json beside it.
    pub fn load(path: &Path, device: Device, kind: Kind, parts: VaeParts) -> Result<Self> {
        let (config, weights) = component_files(path, kind)?;
        let cfg = AutoencoderKLConfig::from_json_file(&config)?;
        let file = TensorFile::open(&weights)?;
        Self::from_source(&file, &cfg, device, kind, parts)
    }

    fn kind_device(&self) -> (Kind, Device) {
        let w = &self.decoder.conv_in.ws;
        (w.kind(), w.device())
    }

    /// Images [B, 3, H, W] in about [-1, 1] from latents [B, 4, h, w] that the caller has
    /// already divided by `scaling_factor`. Computed in the model's kind.
    pub fn decode(&self, latents: &Tensor) -> Tensor {
        let (kind, device) = self.kind_device();
        let z = latents.to_device(device).to_kind(kind);
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(&z),
            None => z,
        };
        self.decoder.forward(&z)
    }

    /// The mean of the latent distribution of images [B, 3, H, W] in [-1, 1] (not yet
    /// multiplied by `scaling_factor`). Needs a VAE built with [`VaeParts::EncoderAndDecoder`].
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let Some((encoder, quant_conv)) = &self.encoder else {
            anyhow::bail!("this VAE was loaded without its encoder");
        };
        let (kind, device) = self.kind_device();
        let moments = encoder.forward(&images.to_device(device).to_kind(kind));
        let moments = match quant_conv {
            Some(conv) => conv.forward(&moments),
            None => moments,
        };
        Ok(moments.narrow(1, 0, self.cfg.latent_channels))
    }
}

/// Writes a diffusers `vae/` folder (encoder included) with seeded random weights.
pub fn write_random_model(
    dir: &Path,
    cfg: &AutoencoderKLConfig,
    seed: i64,
    fp16_variant: bool,
) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        AutoencoderKL::new(root, cfg, VaeParts::EncoderAndDecoder).map(drop)
    })?;
    save_component(dir, &cfg.to_config_json(), &vs, fp16_variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_vae_shapes_and_keys() {
        let cfg = AutoencoderKLConfig::tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let vae = AutoencoderKL::new(vs.root(), &cfg, VaeParts::EncoderAndDecoder).unwrap();
        let names = vs.variables();
        for key in [
            "decoder.mid_block.attentions.0.group_norm.weight",
            "decoder.mid_block.attentions.0.to_out.0.bias",
            "decoder.up_blocks.0.upsamplers.0.conv.weight",
            "encoder.down_blocks.0.downsamplers.0.conv.weight",
            "post_quant_conv.weight",
            "quant_conv.bias",
        ] {
            assert!(names.contains_key(key), "{key}");
        }
        let z = Tensor::randn([1, 4, 8, 8], (Kind::Float, Device::Cpu));
        let img = tch::no_grad(|| vae.decode(&z));
        assert_eq!(img.size(), [1, 3, 16, 16]);
        let back = tch::no_grad(|| vae.encode(&img)).unwrap();
        assert_eq!(back.size(), [1, 4, 8, 8]);
        assert_eq!(cfg.scale_factor(), 2);
        assert_eq!(AutoencoderKLConfig::sd15().scale_factor(), 8);
    }

    #[test]
    fn option_values_are_diffusers_names_and_others_fail_naming_file_and_key() {
        let json: serde_json::Value =
            serde_json::from_str(&AutoencoderKLConfig::sd15().to_config_json()).unwrap();
        assert_eq!(json["down_block_types"][0], "DownEncoderBlock2D");
        assert_eq!(json["up_block_types"][3], "UpDecoderBlock2D");
        assert_eq!(json["act_fn"], "silu");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        for (json, key, allowed) in [
            (
                r#"{"down_block_types": ["DownEncoderBlock2d"]}"#,
                "down_block_types",
                "`DownEncoderBlock2D`",
            ),
            (
                r#"{"up_block_types": ["AttnUpDecoderBlock2D"]}"#,
                "up_block_types",
                "`UpDecoderBlock2D`",
            ),
            (r#"{"act_fn": "swishh"}"#, "act_fn", "`silu`"),
        ] {
            std::fs::write(&path, json).unwrap();
            let msg = format!(
                "{:#}",
                AutoencoderKLConfig::from_json_file(&path).unwrap_err()
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("key \"{key}\"")), "{msg}");
            assert!(msg.contains(allowed), "{msg}");
        }
    }
}
