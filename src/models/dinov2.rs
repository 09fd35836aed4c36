//! DINOv2 as transformers' `Dinov2Model` in the hub layout (facebook/dinov2-small, -base):
//! `embeddings.{cls_token, mask_token, position_embeddings, patch_embeddings.projection}`,
//! `encoder.layer.N.{norm1, attention.attention.{query,key,value}, attention.output.dense,
//! layer_scale1.lambda1, norm2, mlp.fc1, mlp.fc2, layer_scale2.lambda1}`, `layernorm`.
//! The image embedding is the final-norm CLS token (transformers' `pooler_output`).
use super::clip_text::{Activation, layer_norm, multi_head_attention, save_model, weights_file};
use super::preprocess::Preprocess;
use crate::weights;
use crate::weights::config_json::read as read_config;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn, nn::Module};

/// transformers' `Dinov2Config` (the fields the network uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Dinov2Config {
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub mlp_ratio: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub image_size: i64,
    pub patch_size: i64,
    pub num_channels: i64,
    pub qkv_bias: bool,
    pub layerscale_value: f64,
    pub use_swiglu_ffn: bool,
    pub use_mask_token: bool,
}

impl Default for Dinov2Config {
    /// transformers' defaults.
    fn default() -> Self {
        Dinov2Config {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-6,
            image_size: 224,
            patch_size: 14,
            num_channels: 3,
            qkv_bias: true,
            layerscale_value: 1.0,
            use_swiglu_ffn: false,
            use_mask_token: true,
        }
    }
}

impl Dinov2Config {
    /// facebook/dinov2-base.
    pub fn base() -> Self {
        Dinov2Config {
            image_size: 518,
            ..Default::default()
        }
    }

    /// facebook/dinov2-small.
    pub fn small() -> Self {
        Dinov2Config {
            hidden_size: 384,
            num_attention_heads: 6,
            image_size: 518,
            ..Default::default()
        }
    }

    /// A tiny model for tests: the real layout, 2 layers; position embeddings for 518 px so
    /// that 224 px inputs interpolate them as the real models do.
    pub fn tiny() -> Self {
        Dinov2Config {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            image_size: 518,
            ..Default::default()
        }
    }

    fn intermediate_size(&self) -> i64 {
        self.hidden_size * self.mlp_ratio
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: Self = read_config(path, "DINOv2 config")?;
        if cfg.use_swiglu_ffn {
            bail!(
                "{}: use_swiglu_ffn (dinov2-giant) is not supported; use dinov2-small/-base/-large",
                path.display()
            );
        }
        Ok(cfg)
    }

    /// A `config.json` that `Dinov2Model.from_pretrained` loads.
    pub fn to_config_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(self).expect("config serializes");
        json["model_type"] = "dinov2".into();
        json["architectures"] = serde_json::json!(["Dinov2Model"]);
        json
    }
}

struct Layer {
    norm1: nn::LayerNorm,
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    dense: nn::Linear,
    scale1: Tensor,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    scale2: Tensor,
    heads: i64,
    act: Activation,
}

impl Layer {
    fn new(vs: nn::Path, c: &Dinov2Config) -> Self {
        let h = c.hidden_size;
        let qkv = nn::LinearConfig {
            bias: c.qkv_bias,
            ..Default::default()
        };
        let attn = &vs / "attention";
        let scale = |p: nn::Path| p.var("lambda1", &[h], nn::Init::Const(c.layerscale_value));
        Layer {
            norm1: layer_norm(&vs / "norm1", h, c.layer_norm_eps),
            query: nn::linear(&attn / "attention" / "query", h, h, qkv),
            key: nn::linear(&attn / "attention" / "key", h, h, qkv),
            value: nn::linear(&attn / "attention" / "value", h, h, qkv),
            dense: nn::linear(&attn / "output" / "dense", h, h, Default::default()),
            scale1: scale(&vs / "layer_scale1"),
            norm2: layer_norm(&vs / "norm2", h, c.layer_norm_eps),
            fc1: nn::linear(
                &vs / "mlp" / "fc1",
                h,
                c.intermediate_size(),
                Default::default(),
            ),
            fc2: nn::linear(
                &vs / "mlp" / "fc2",
                c.intermediate_size(),
                h,
                Default::default(),
            ),
            scale2: scale(&vs / "layer_scale2"),
            heads: c.num_attention_heads,
            act: c.hidden_act,
        }
    }

    fn attention(&self, x: &Tensor) -> Tensor {
        let (q, k, v) = (
            self.query.forward(x),
            self.key.forward(x),
            self.value.forward(x),
        );
        self.dense
            .forward(&multi_head_attention(&q, &k, &v, self.heads, false))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attention(&self.norm1.forward(x)) * &self.scale1;
        let h = self
            .fc2
            .forward(&self.act.apply(&self.fc1.forward(&self.norm2.forward(&x))));
        &x + h * &self.scale2
    }
}

pub struct Dinov2Model {
    cls_token: Tensor,
    position_embeddings: Tensor,
    projection: nn::Conv2D,
    layers: Vec<Layer>,
    layernorm: nn::LayerNorm,
    patch_size: i64,
    preprocess: Preprocess,
}

impl Dinov2Model {
    pub fn new(vs: nn::Path, c: &Dinov2Config) -> Self {
        let e = &vs / "embeddings";
        let h = c.hidden_size;
        let positions = (c.image_size / c.patch_size).pow(2) + 1;
        if c.use_mask_token {
            // Only used in pre-training; present in the checkpoints.
            let _ = e.zeros("mask_token", &[1, h]);
        }
        let conv = nn::ConvConfig {
            stride: c.patch_size,
            ..Default::default()
        };
        Dinov2Model {
            cls_token: e.zeros("cls_token", &[1, 1, h]),
            position_embeddings: e.zeros("position_embeddings", &[1, positions, h]),
            projection: nn::conv2d(
                &e / "patch_embeddings" / "projection",
                c.num_channels,
                h,
                c.patch_size,
                conv,
            ),
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::new(&vs / "encoder" / "layer" / i, c))
                .collect(),
            layernorm: layer_norm(&vs / "layernorm", h, c.layer_norm_eps),
            patch_size: c.patch_size,
            preprocess: Preprocess::dinov2(),
        }
    }

    /// Loads a `Dinov2Model` folder (config.json + model.safetensors, optionally
    /// preprocessor_config.json), e.g. facebook/dinov2-base. The weights may carry
    /// transformers' base-model prefix `dinov2.` or not, as transformers accepts both.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg = Dinov2Config::from_file(&dir.join("config.json"))?;
        let file = weights::TensorFile::open(weights_file(dir)?)?;
        let keys = weights::safetensors_io::with_or_without_prefix(&file, "dinov2");
        let mut model = weights::build_and_load(&file, device, kind, keys, |root| {
            Ok(Dinov2Model::new(root, &cfg))
        })?;
        model.preprocess = read_preprocess(&dir.join("preprocessor_config.json"))?;
        Ok(model)
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// transformers' `interpolate_pos_encoding`: the patch grid's position embeddings resized
    /// bicubically (align_corners false, in float32) to `gh x gw` patches.
    fn positions(&self, gh: i64, gw: i64) -> Tensor {
        let (_, n, dim) = self.position_embeddings.size3().expect("[1, N, D]");
        let side = ((n - 1) as f64).sqrt() as i64;
        if side * side == gh * gw && gh == gw {
            return self.position_embeddings.shallow_clone();
        }
        let class = self.position_embeddings.narrow(1, 0, 1);
        let grid = self
            .position_embeddings
            .narrow(1, 1, n - 1)
            .reshape([1, side, side, dim])
            .permute([0, 3, 1, 2]);
        let kind = grid.kind();
        let grid = grid
            .to_kind(Kind::Float)
            .upsample_bicubic2d([gh, gw], false, None, None)
            .to_kind(kind)
            .permute([0, 2, 3, 1])
            .reshape([1, gh * gw, dim]);
        Tensor::cat(&[class, grid], 1)
    }

    /// The final-norm sequence `[B, 1 + patches, D]` of preprocessed pixels `[B, 3, H, W]`.
    pub fn forward(&self, pixels: &Tensor) -> Tensor {
        let (b, _, h, w) = pixels.size4().expect("pixels are [B, 3, H, W]");
        let patches = self
            .projection
            .forward(pixels)
            .flatten(2, -1)
            .transpose(1, 2);
        let dim = patches.size()[2];
        let cls = self.cls_token.expand([b, 1, dim], false);
        let mut x = Tensor::cat(&[cls, patches], 1)
            + self.positions(h / self.patch_size, w / self.patch_size);
        for layer in &self.layers {
            x = layer.forward(&x);
        }
        self.layernorm.forward(&x)
    }

    /// The patch tokens of the final norm (`last_hidden_state` without the CLS token),
    /// `[B, patches, D]`.
    pub fn patch_tokens(&self, pixels: &Tensor) -> Tensor {
        let x = self.forward(pixels);
        let n = x.size()[1];
        x.narrow(1, 1, n - 1)
    }

    /// The image embedding: the CLS token of the final norm (`pooler_output`), `[B, D]`.
    pub fn image_embeds(&self, pixels: &Tensor) -> Tensor {
        self.forward(pixels).select(1, 0)
    }
}

#[derive(Deserialize)]
struct ProcessorRaw {
    size: Option<serde_json::Value>,
    crop_size: Option<serde_json::Value>,
    image_mean: Option<[f64; 3]>,
    image_std: Option<[f64; 3]>,
}

/// The resize, crop and normalization of a `preprocessor_config.json` (BitImageProcessor),
/// DINOv2's defaults where the file or a field is missing.
fn read_preprocess(path: &Path) -> Result<Preprocess> {
    let mut p = Preprocess::dinov2();
    if !path.is_file() {
        return Ok(p);
    }
    let raw: ProcessorRaw = read_config(path, "image processor config")?;
    let side = |v: &Option<serde_json::Value>, key: &str| -> Result<Option<usize>> {
        match v {
            None => Ok(None),
            Some(v) => v
                .get(key)
                .and_then(|x| x.as_u64())
                .map(|x| Some(x as usize))
                .with_context(|| format!("{}: expected {{\"{key}\": N}}", path.display())),
        }
    };
    if let Some(s) = side(&raw.size, "shortest_edge")? {
        p.resize = s;
    }
    if let Some(c) = side(&raw.crop_size, "height")? {
        p.crop = c;
    }
    p.mean = raw.image_mean.unwrap_or(p.mean);
    p.std = raw.image_std.unwrap_or(p.std);
    Ok(p)
}

/// A random `Dinov2Model` folder in the real layout (tests, speed measurements).
pub fn write_random_model(dir: &Path, cfg: &Dinov2Config, seed: i64) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        Dinov2Model::new(root, cfg);
        Ok(())
    })?;
    save_model(dir, &cfg.to_config_json(), &vs)?;
    let p = Preprocess::dinov2();
    let processor = serde_json::json!({
        "image_processor_type": "BitImageProcessor",
        "do_resize": true, "size": {"shortest_edge": p.resize}, "resample": 3,
        "do_center_crop": true, "crop_size": {"height": p.crop, "width": p.crop},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0,
        "do_normalize": true, "image_mean": p.mean, "image_std": p.std,
        "do_convert_rgb": true,
    });
    let path = dir.join("preprocessor_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&processor)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
