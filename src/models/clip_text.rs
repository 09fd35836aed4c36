//! CLIP text transformer as transformers' `CLIPTextModel` (keys `text_model.*`), plus the
//! pre-norm transformer encoder that the vision tower shares.
use crate::weights::{self, TensorSource};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn, nn::Module};

/// `hidden_act` of a CLIP config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's CLIP (SD1.5's text encoder).
    QuickGelu,
    /// Exact (erf) GELU, OpenCLIP ViT-H.
    Gelu,
    /// tanh approximation.
    #[serde(alias = "gelu_new", alias = "gelu_fast")]
    GeluPytorchTanh,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
            Activation::Gelu => x.gelu("none"),
            Activation::GeluPytorchTanh => x.gelu("tanh"),
        }
    }
}

/// The layer shapes shared by the text and vision configs.
#[derive(Debug, Clone, Copy)]
pub struct EncoderShape {
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

/// Multi-head attention of the projected `q` [B, N, C] over `k`, `v` [B, M, C] in `heads`
/// heads of C / heads: softmax(q kᵀ / √(C / heads)) v per head (causal: each position sees
/// those before it), the heads merged back to [B, N, C].
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    causal: bool,
) -> Tensor {
    let (b, n, c) = q.size3().expect("attention input is [B, N, C]");
    let split = |y: &Tensor| y.view([b, y.size()[1], heads, c / heads]).transpose(1, 2);
    let y = Tensor::scaled_dot_product_attention(
        &split(q),
        &split(k),
        &split(v),
        None::<Tensor>,
        0.0,
        causal,
        None,
        false,
    );
    y.transpose(1, 2).reshape([b, n, c])
}

pub fn layer_norm(vs: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(
        vs,
        vec![dim],
        nn::LayerNormConfig {
            eps,
            ..Default::default()
        },
    )
}

struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(vs: nn::Path, s: &EncoderShape) -> Self {
        let lin =
            |name: &str| nn::linear(&vs / name, s.hidden_size, s.hidden_size, Default::default());
        Attention {
            q_proj: lin("q_proj"),
            k_proj: lin("k_proj"),
            v_proj: lin("v_proj"),
            out_proj: lin("out_proj"),
            heads: s.num_attention_heads,
        }
    }

    fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        let (q, k, v) = (
            self.q_proj.forward(x),
            self.k_proj.forward(x),
            self.v_proj.forward(x),
        );
        self.out_proj
            .forward(&multi_head_attention(&q, &k, &v, self.heads, causal))
    }
}

struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    layer_norm2: nn::LayerNorm,
    act: Activation,
}

impl EncoderLayer {
    fn new(vs: nn::Path, s: &EncoderShape) -> Self {
        EncoderLayer {
            self_attn: Attention::new(&vs / "self_attn", s),
            layer_norm1: layer_norm(&vs / "layer_norm1", s.hidden_size, s.layer_norm_eps),
            fc1: nn::linear(
                &vs / "mlp" / "fc1",
                s.hidden_size,
                s.intermediate_size,
                Default::default(),
            ),
            fc2: nn::linear(
                &vs / "mlp" / "fc2",
                s.intermediate_size,
                s.hidden_size,
                Default::default(),
            ),
            layer_norm2: layer_norm(&vs / "layer_norm2", s.hidden_size, s.layer_norm_eps),
            act: s.hidden_act,
        }
    }

    fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        let x = x + self.self_attn.forward(&self.layer_norm1.forward(x), causal);
        let h = self.fc2.forward(
            &self
                .act
                .apply(&self.fc1.forward(&self.layer_norm2.forward(&x))),
        );
        x + h
    }
}

/// `encoder.layers.N`: pre-norm transformer layers.
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    pub fn new(vs: nn::Path, s: &EncoderShape) -> Self {
        let layers = (0..s.num_hidden_layers)
            .map(|i| EncoderLayer::new(&vs / "layers" / i, s))
            .collect();
        Encoder { layers }
    }

    /// Runs every layer; also returns the input of the last layer (transformers'
    /// `hidden_states[-2]`, where `hidden_states[0]` is the encoder input).
    pub fn forward(&self, x: &Tensor, causal: bool) -> (Tensor, Tensor) {
        let mut penultimate = x.shallow_clone();
        let mut x = x.shallow_clone();
        for layer in &self.layers {
            penultimate = x;
            x = layer.forward(&penultimate, causal);
        }
        (x, penultimate)
    }
}

/// transformers' `CLIPTextConfig` (the fields the network uses).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub projection_dim: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub max_position_embeddings: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
    pub pad_token_id: i64,
}

impl Default for ClipTextConfig {
    /// transformers' defaults.
    fn default() -> Self {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            bos_token_id: 49406,
            eos_token_id: 49407,
            pad_token_id: 1,
        }
    }
}

impl ClipTextConfig {
    /// SD1.5's text encoder (OpenAI CLIP ViT-L/14 text tower).
    pub fn sd15() -> Self {
        ClipTextConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            // SD1.5's config keeps the pre-2023 ids; pooling then uses argmax(ids).
            bos_token_id: 0,
            eos_token_id: 2,
            ..Default::default()
        }
    }

    /// Text tower of openai/clip-vit-large-patch14 (the scorer), current config ids.
    pub fn vit_l14() -> Self {
        ClipTextConfig {
            eos_token_id: 49407,
            bos_token_id: 49406,
            ..Self::sd15()
        }
    }

    /// SDXL's `text_encoder_2` (OpenCLIP ViT-bigG/14 text tower with projection; its
    /// config keeps the pre-2023 ids, so pooling uses argmax(ids)).
    pub fn vit_big_g() -> Self {
        ClipTextConfig {
            hidden_size: 1280,
            intermediate_size: 5120,
            projection_dim: 1280,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            hidden_act: Activation::Gelu,
            bos_token_id: 0,
            eos_token_id: 2,
            ..Default::default()
        }
    }

    pub fn tiny() -> Self {
        ClipTextConfig {
            hidden_size: 32,
            intermediate_size: 37,
            projection_dim: 16,
            num_hidden_layers: 2,
            num_attention_heads: 4,
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

    pub fn from_file(path: &Path) -> Result<Self> {
        weights::config_json::read(path, "CLIPTextConfig")
    }

    /// A `config.json` that `CLIPTextModel.from_pretrained` loads.
    pub fn to_config_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(self).expect("config serializes");
        json["model_type"] = "clip_text_model".into();
        json["architectures"] = serde_json::json!(["CLIPTextModel"]);
        json
    }
}

/// The weights of a transformers/diffusers model folder: `model.safetensors`, else
/// `model.fp16.safetensors`, else `pytorch_model.bin`.
pub(crate) fn weights_file(dir: &Path) -> Result<PathBuf> {
    weights::pipeline_folder::find_weights(dir, "model", false)
}

/// Writes `config.json` and `model.safetensors` (fp32) for the model in `vs`.
pub(crate) fn save_model(dir: &Path, config: &serde_json::Value, vs: &nn::VarStore) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    weights::random::save_var_store(vs, &dir.join("model.safetensors"), Kind::Float)
}

pub struct ClipTextModel {
    token_embedding: nn::Embedding,
    position_embedding: nn::Embedding,
    encoder: Encoder,
    final_layer_norm: nn::LayerNorm,
    eos_token_id: i64,
}

impl ClipTextModel {
    /// `vs` is the `text_model` path.
    pub fn new(vs: nn::Path, cfg: &ClipTextConfig) -> Self {
        let emb = &vs / "embeddings";
        ClipTextModel {
            token_embedding: nn::embedding(
                &emb / "token_embedding",
                cfg.vocab_size,
                cfg.hidden_size,
                Default::default(),
            ),
            position_embedding: nn::embedding(
                &emb / "position_embedding",
                cfg.max_position_embeddings,
                cfg.hidden_size,
                Default::default(),
            ),
            encoder: Encoder::new(&vs / "encoder", &cfg.shape()),
            final_layer_norm: layer_norm(
                &vs / "final_layer_norm",
                cfg.hidden_size,
                cfg.layer_norm_eps,
            ),
            eos_token_id: cfg.eos_token_id,
        }
    }

    /// Loads a `CLIPTextModel` folder (diffusers `text_encoder/`): config.json + weights.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let file = weights::TensorFile::open(weights_file(dir)?)?;
        Self::load_from(&file, &cfg, device, kind)
    }

    /// Builds the model on `device` in `kind` and loads it from `source` (transformers' names).
    pub fn load_from(
        source: &dyn TensorSource,
        cfg: &ClipTextConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        load_text_model(source, device, kind, |root| {
            ClipTextModel::new(root / "text_model", cfg)
        })
    }

    /// `last_hidden_state` `[B, T, hidden]` (after `final_layer_norm`) for ids `[B, T]`.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        self.forward_with_penultimate(ids).0
    }

    /// `last_hidden_state` and `hidden_states[-2]` (the last layer's input, not normalized:
    /// what SDXL's pipeline conditions on).
    pub fn forward_with_penultimate(&self, ids: &Tensor) -> (Tensor, Tensor) {
        let t = ids.size()[1];
        let positions = Tensor::arange(t, (Kind::Int64, ids.device()));
        let x = self.token_embedding.forward(ids) + self.position_embedding.forward(&positions);
        let (x, penultimate) = self.encoder.forward(&x, true);
        (self.final_layer_norm.forward(&x), penultimate)
    }

    /// `pooler_output` `[B, hidden]`: the hidden state at the first end-of-text token.
    pub fn pooled(&self, ids: &Tensor, last_hidden: &Tensor) -> Tensor {
        // Configs from before transformers#24773 have eos_token_id 2 and pool at argmax(ids),
        // which is the first <|endoftext|> (the largest id) for CLIP's tokenizer.
        let positions = if self.eos_token_id == 2 {
            ids.argmax(-1, false)
        } else {
            ids.eq(self.eos_token_id)
                .to_kind(Kind::Int)
                .argmax(-1, false)
        };
        let rows = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
        last_hidden.index(&[Some(rows), Some(positions)])
    }
}

/// Writes a `CLIPTextModel` folder with seeded random weights: `config.json` + `model.safetensors`.
pub fn write_random_model(dir: &Path, cfg: &ClipTextConfig, seed: i64) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        ClipTextModel::new(root / "text_model", cfg);
        Ok(())
    })?;
    save_model(dir, &cfg.to_config_json(), &vs)
}

/// transformers' `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): the text model
/// and `text_projection` (no bias) of its pooled output.
pub struct ClipTextModelWithProjection {
    text: ClipTextModel,
    text_projection: nn::Linear,
}

impl ClipTextModelWithProjection {
    /// `vs` is the model's root (`text_model.*`, `text_projection.weight`).
    pub fn new(vs: nn::Path, cfg: &ClipTextConfig) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        ClipTextModelWithProjection {
            text: ClipTextModel::new(&vs / "text_model", cfg),
            text_projection: nn::linear(
                &vs / "text_projection",
                cfg.hidden_size,
                cfg.projection_dim,
                no_bias,
            ),
        }
    }

    /// Builds the model on `device` in `kind` and loads it from `source` (transformers' names).
    pub fn load_from(
        source: &dyn TensorSource,
        cfg: &ClipTextConfig,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        load_text_model(source, device, kind, |root| {
            ClipTextModelWithProjection::new(root, cfg)
        })
    }

    /// `hidden_states[-2]` `[B, T, hidden]` and `text_embeds` `[B, projection_dim]` (the
    /// projected pooled output) for ids `[B, T]`.
    pub fn forward(&self, ids: &Tensor) -> (Tensor, Tensor) {
        let (last, penultimate) = self.text.forward_with_penultimate(ids);
        let pooled = self.text.pooled(ids, &last);
        (penultimate, self.text_projection.forward(&pooled))
    }
}

/// Builds a text model with `build` on `device` in `kind` and loads it from `source`, whose
/// names are transformers' with or without the `text_model.` prefix (files saved before and
/// after transformers 5).
fn load_text_model<M>(
    source: &dyn TensorSource,
    device: Device,
    kind: Kind,
    build: impl FnOnce(nn::Path) -> M,
) -> Result<M> {
    weights::build_and_load(
        source,
        device,
        kind,
        weights::safetensors_io::with_or_without_prefix(source, "text_model"),
        |root| Ok(build(root)),
    )
}

/// Writes a `CLIPTextModelWithProjection` folder with seeded random weights.
pub fn write_random_model_with_projection(
    dir: &Path,
    cfg: &ClipTextConfig,
    seed: i64,
) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        ClipTextModelWithProjection::new(root, cfg);
        Ok(())
    })?;
    let mut json = cfg.to_config_json();
    json["architectures"] = serde_json::json!(["CLIPTextModelWithProjection"]);
    save_model(dir, &json, &vs)
}
