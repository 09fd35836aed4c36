//! `UNet2DConditionModel` (diffusers 0.42) with the decoupled IP-Adapter cross-attention.
//!
//! Variable names are the diffusers keys (`down_blocks.0.attentions.0.transformer_blocks.0.
//! attn2.to_k.weight`, ...). A UNet built with an [`IpLayout`] also holds, in every `attn2`,
//! `processor.to_k_ip.0.weight` / `processor.to_v_ip.0.weight` (zeros until
//! [`UNet2DConditionModel::load_ip_adapter`]), as diffusers does after `load_ip_adapter`.
use crate::models::attention::{
    CrossAttnContext, ExtraContext, IpContext, IpWeights, Nag, TokenMerge,
};
use crate::models::attention_probe::AttentionProbe;
use crate::models::embeddings::{TimestepEmbedding, timestep_embedding};
use crate::models::resnet::{ActFn, conv2d, group_norm};
use crate::models::unet_blocks::{
    AttnSpec, BlockCommon, DownBlock2D, DownBlockConfig, UNetMidBlock2DCrossAttn, UpBlock2D,
    UpBlockConfig,
};
use crate::params::IpScaling;
use crate::weights::{self, TensorFile, TensorSource, config_json};
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn, nn::Module};

/// A config value given once for all blocks or once per block (`attention_head_dim: 8` or
/// `[5, 10, 20, 20]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Copy> OneOrMany<T> {
    /// The value for block `i` (callers check lengths in `validate`).
    pub fn get(&self, i: usize) -> T {
        match self {
            OneOrMany::One(v) => *v,
            OneOrMany::Many(vs) => vs[i],
        }
    }

    fn len(&self) -> Option<usize> {
        match self {
            OneOrMany::One(_) => None,
            OneOrMany::Many(vs) => Some(vs.len()),
        }
    }
}

/// A down block of the UNet (diffusers' `down_block_types`); the variant names are
/// diffusers' class names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    CrossAttnDownBlock2D,
    DownBlock2D,
}

impl DownBlockType {
    /// The block with (`true`) or without cross-attention.
    pub fn with_cross_attention(cross: bool) -> Self {
        if cross {
            DownBlockType::CrossAttnDownBlock2D
        } else {
            DownBlockType::DownBlock2D
        }
    }
}

/// An up block of the UNet (diffusers' `up_block_types`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    CrossAttnUpBlock2D,
    UpBlock2D,
}

impl UpBlockType {
    /// The block with (`true`) or without cross-attention.
    pub fn with_cross_attention(cross: bool) -> Self {
        if cross {
            UpBlockType::CrossAttnUpBlock2D
        } else {
            UpBlockType::UpBlock2D
        }
    }
}

/// The UNet's mid block; diffusers' `UNetMidBlock2DSimpleCrossAttn` and `UNetMidBlock2D`
/// are not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    UNetMidBlock2DCrossAttn,
}

/// How the time embedding enters the resnets; diffusers' `scale_shift` is not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeScaleShift {
    /// Added to the hidden states.
    Default,
}

/// Diffusers' `time_embedding_type`; `fourier` is not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeEmbeddingType {
    /// Sinusoidal, as in DDPM.
    Positional,
}

/// Diffusers' `attention_type`; the gated (GLIGEN) variants are not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionType {
    Default,
}

/// diffusers' `UNet2DConditionModel` config.json. Missing keys take diffusers' defaults;
/// unknown keys are ignored; options this implementation does not have are rejected by
/// [`UNet2DConditionConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConditionConfig {
    pub sample_size: Option<i64>,
    pub in_channels: i64,
    pub out_channels: i64,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<DownBlockType>,
    /// `null` (no mid block) is refused by `validate`.
    pub mid_block_type: Option<MidBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub only_cross_attention: OneOrMany<bool>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: OneOrMany<i64>,
    pub downsample_padding: i64,
    pub mid_block_scale_factor: f64,
    pub act_fn: ActFn,
    pub norm_num_groups: Option<i64>,
    pub norm_eps: f64,
    pub cross_attention_dim: OneOrMany<i64>,
    pub transformer_layers_per_block: OneOrMany<i64>,
    /// Despite the name, the number of heads (diffusers issue #2011).
    pub attention_head_dim: OneOrMany<i64>,
    pub num_attention_heads: Option<OneOrMany<i64>>,
    pub dual_cross_attention: bool,
    pub use_linear_projection: bool,
    /// No effect with fused attention (diffusers' `AttnProcessor2_0` ignores it too).
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: TimeScaleShift,
    pub resnet_skip_time_act: bool,
    pub time_embedding_type: TimeEmbeddingType,
    pub time_embedding_dim: Option<i64>,
    pub time_embedding_act_fn: Option<String>,
    pub timestep_post_act: Option<String>,
    pub conv_in_kernel: i64,
    pub conv_out_kernel: i64,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<i64>,
    /// `text_time` (SDXL) or none; others are refused by `validate`.
    pub addition_embed_type: Option<String>,
    /// Width of each sinusoidal embedding of SDXL's six `time_ids` (256).
    pub addition_time_embed_dim: Option<i64>,
    /// Input width of `add_embedding`: the pooled text width plus 6 x
    /// `addition_time_embed_dim` (SDXL: 1280 + 1536 = 2816).
    pub projection_class_embeddings_input_dim: Option<i64>,
    pub encoder_hid_dim: Option<i64>,
    /// Refused when set (up blocks' own transformer depths).
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    pub encoder_hid_dim_type: Option<String>,
    pub attention_type: AttentionType,
    pub cross_attention_norm: Option<String>,
}

impl Default for UNet2DConditionConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        use DownBlockType::{CrossAttnDownBlock2D, DownBlock2D};
        use UpBlockType::{CrossAttnUpBlock2D, UpBlock2D};
        UNet2DConditionConfig {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: vec![
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                CrossAttnDownBlock2D,
                DownBlock2D,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2DCrossAttn),
            up_block_types: vec![
                UpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
                CrossAttnUpBlock2D,
            ],
            only_cross_attention: OneOrMany::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: OneOrMany::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: ActFn::Silu,
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: OneOrMany::One(1280),
            transformer_layers_per_block: OneOrMany::One(1),
            attention_head_dim: OneOrMany::One(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            resnet_time_scale_shift: TimeScaleShift::Default,
            resnet_skip_time_act: false,
            time_embedding_type: TimeEmbeddingType::Positional,
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            class_embed_type: None,
            num_class_embeds: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
            encoder_hid_dim: None,
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim_type: None,
            attention_type: AttentionType::Default,
            cross_attention_norm: None,
        }
    }
}

impl UNet2DConditionConfig {
    /// Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5 `unet/config.json`).
    pub fn sd15() -> Self {
        UNet2DConditionConfig {
            sample_size: Some(64),
            cross_attention_dim: OneOrMany::One(768),
            ..Default::default()
        }
    }

    /// The tiny UNet of `diffusers_baseline.py --tiny`: channels (32, 64), 2 layers,
    /// cross-attention width 32, 4 heads; latents of 8x8 (sample_size 8).
    pub fn tiny() -> Self {
        UNet2DConditionConfig {
            sample_size: Some(8),
            down_block_types: vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            up_block_types: vec![UpBlockType::UpBlock2D, UpBlockType::CrossAttnUpBlock2D],
            block_out_channels: vec![32, 64],
            cross_attention_dim: OneOrMany::One(32),
            attention_head_dim: OneOrMany::One(4),
            ..Default::default()
        }
    }

    /// SD1.5's block layout (4 levels, 3 with cross-attention, 2 layers: 16 cross-attention
    /// blocks) at the tiny widths: channels (32, 32, 64, 64), cross-attention width 32,
    /// 4 heads.
    pub fn tiny_sd15_layout() -> Self {
        UNet2DConditionConfig {
            sample_size: Some(8),
            block_out_channels: vec![32, 32, 64, 64],
            cross_attention_dim: OneOrMany::One(32),
            attention_head_dim: OneOrMany::One(4),
            ..Default::default()
        }
    }

    /// SDXL base (stabilityai/stable-diffusion-xl-base-1.0 `unet/config.json`): three levels,
    /// transformer depths 1, 2, 10 (10 in the mid block), linear projections, 5/10/20 heads,
    /// cross-attention width 2048, `text_time` added embedding.
    pub fn sdxl() -> Self {
        use DownBlockType::{CrossAttnDownBlock2D, DownBlock2D};
        use UpBlockType::{CrossAttnUpBlock2D, UpBlock2D};
        UNet2DConditionConfig {
            sample_size: Some(128),
            down_block_types: vec![DownBlock2D, CrossAttnDownBlock2D, CrossAttnDownBlock2D],
            up_block_types: vec![CrossAttnUpBlock2D, CrossAttnUpBlock2D, UpBlock2D],
            block_out_channels: vec![320, 640, 1280],
            cross_attention_dim: OneOrMany::One(2048),
            transformer_layers_per_block: OneOrMany::Many(vec![1, 2, 10]),
            attention_head_dim: OneOrMany::Many(vec![5, 10, 20]),
            use_linear_projection: true,
            addition_embed_type: Some("text_time".into()),
            addition_time_embed_dim: Some(256),
            projection_class_embeddings_input_dim: Some(2816),
            ..Default::default()
        }
    }

    /// SDXL's layout at tiny widths: channels (32, 32, 64), transformer depths 1, 1, 2,
    /// 2/2/4 heads, cross-attention width 64 (two 32-wide text encoders), pooled text 32,
    /// time-id embeddings 8 wide; latents of 8x8.
    pub fn tiny_sdxl() -> Self {
        UNet2DConditionConfig {
            sample_size: Some(8),
            block_out_channels: vec![32, 32, 64],
            cross_attention_dim: OneOrMany::One(64),
            transformer_layers_per_block: OneOrMany::Many(vec![1, 1, 2]),
            attention_head_dim: OneOrMany::Many(vec![2, 2, 4]),
            addition_time_embed_dim: Some(8),
            projection_class_embeddings_input_dim: Some(32 + 6 * 8),
            ..Self::sdxl()
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        config_json::read_valid(
            path,
            "UNet2DConditionModel config",
            "UNet config",
            Self::validate,
        )
    }

    /// A config.json that diffusers' `UNet2DConditionModel.from_pretrained` loads.
    pub fn to_config_json(&self) -> String {
        config_json::diffusers_json(self, "UNet2DConditionModel")
    }

    pub fn num_blocks(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Width of the text (and IP-Adapter image) tokens, as a single value.
    pub fn context_dim(&self) -> i64 {
        self.cross_attention_dim.get(0)
    }

    /// Rejects configs with options this implementation does not provide, or that
    /// diffusers itself would reject.
    pub fn validate(&self) -> Result<()> {
        let n = self.num_blocks();
        ensure!(n > 0, "block_out_channels is empty");
        ensure!(
            self.down_block_types.len() == n && self.up_block_types.len() == n,
            "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have \
             the same length",
            self.down_block_types.len(),
            self.up_block_types.len()
        );
        for (name, len) in [
            ("layers_per_block", self.layers_per_block.len()),
            ("cross_attention_dim", self.cross_attention_dim.len()),
            (
                "transformer_layers_per_block",
                self.transformer_layers_per_block.len(),
            ),
            ("attention_head_dim", self.attention_head_dim.len()),
            ("only_cross_attention", self.only_cross_attention.len()),
        ] {
            if let Some(len) = len {
                ensure!(
                    len == n,
                    "{name} has {len} entries, expected one per block ({n})"
                );
            }
        }
        ensure!(
            self.mid_block_type.is_some(),
            "mid_block_type null (a UNet without mid block) is not supported"
        );
        ensure!(
            self.num_attention_heads.is_none(),
            "num_attention_heads must not be set (use attention_head_dim, as diffusers)"
        );
        ensure!(
            self.norm_num_groups.is_some(),
            "norm_num_groups null is not supported"
        );
        self.validate_addition()?;
        let unsupported = [
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block.is_some(),
            ),
            (
                "class_embed_type",
                self.class_embed_type.is_some() || self.num_class_embeds.is_some(),
            ),
            (
                "encoder_hid_dim",
                self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some(),
            ),
            (
                "time_embedding_act_fn",
                self.time_embedding_act_fn.is_some(),
            ),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
            ("dual_cross_attention", self.dual_cross_attention),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            (
                "only_cross_attention",
                (0..n).any(|i| self.only_cross_attention.get(i)),
            ),
        ];
        for (name, set) in unsupported {
            ensure!(
                !set,
                "{name} is not supported (SD1.x/2.x and SDXL UNets only)"
            );
        }
        let groups = self.norm_num_groups.unwrap_or(32);
        for i in 0..n {
            let c = self.block_out_channels[i];
            let heads = self.attention_head_dim.get(i);
            ensure!(
                c % groups == 0,
                "block_out_channels[{i}] = {c} is not a multiple of norm_num_groups {groups}"
            );
            ensure!(
                heads > 0 && c % heads == 0,
                "block_out_channels[{i}] = {c} is not a multiple of the head count {heads}"
            );
        }
        Ok(())
    }

    /// SDXL's `text_time` added embedding: both widths given and consistent; any other
    /// `addition_embed_type` is refused.
    fn validate_addition(&self) -> Result<()> {
        match self.addition_embed_type.as_deref() {
            None => {
                for (name, set) in [
                    ("addition_time_embed_dim", self.addition_time_embed_dim),
                    (
                        "projection_class_embeddings_input_dim",
                        self.projection_class_embeddings_input_dim,
                    ),
                ] {
                    ensure!(
                        set.is_none(),
                        "{name} is set but addition_embed_type is not (\"text_time\" expected)"
                    );
                }
                Ok(())
            }
            Some("text_time") => {
                let (Some(t), Some(p)) = (
                    self.addition_time_embed_dim,
                    self.projection_class_embeddings_input_dim,
                ) else {
                    bail!(
                        "addition_embed_type \"text_time\" needs addition_time_embed_dim and \
                         projection_class_embeddings_input_dim"
                    );
                };
                ensure!(
                    t > 0 && p > 6 * t,
                    "projection_class_embeddings_input_dim {p} must exceed 6 x \
                     addition_time_embed_dim ({t}): it is the pooled text width plus six time ids"
                );
                Ok(())
            }
            Some(other) => {
                bail!("addition_embed_type {other:?} is not supported (only \"text_time\", SDXL's)")
            }
        }
    }

    /// The pooled text width `add_embedding` expects besides the six time ids (SDXL:
    /// 1280), for a `text_time` UNet.
    pub fn pooled_text_dim(&self) -> Option<i64> {
        match (
            self.addition_time_embed_dim,
            self.projection_class_embeddings_input_dim,
        ) {
            (Some(t), Some(p)) if self.addition_embed_type.is_some() => Some(p - 6 * t),
            _ => None,
        }
    }

    /// The number of cross-attention transformers (`Transformer2DModel`s), which the
    /// per-block IP weights number in execution order: down blocks, mid, up blocks (SD1.5:
    /// 16, down 0-5, mid 6, up 7-15).
    pub fn cross_attention_blocks(&self) -> usize {
        let n = self.num_blocks();
        let down: i64 = (0..n)
            .filter(|&i| self.is_cross_down(i))
            .map(|i| self.layers_per_block.get(i))
            .sum();
        let up: i64 = (0..n)
            .filter(|&i| self.is_cross_up(i))
            .map(|i| self.layers_per_block.get(n - 1 - i) + 1)
            .sum();
        (down + 1 + up) as usize
    }

    fn is_cross_down(&self, i: usize) -> bool {
        self.down_block_types[i] == DownBlockType::CrossAttnDownBlock2D
    }

    fn is_cross_up(&self, i: usize) -> bool {
        self.up_block_types[i] == UpBlockType::CrossAttnUpBlock2D
    }
}

/// Presence of the IP-Adapter branch; `token_dim` is the width of the image tokens (the
/// input width of `to_k_ip` / `to_v_ip`), which is the UNet's cross-attention width for
/// the SD1.5 adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLayout {
    pub token_dim: i64,
}

impl IpLayout {
    pub fn for_config(cfg: &UNet2DConditionConfig) -> Self {
        IpLayout {
            token_dim: cfg.context_dim(),
        }
    }
}

/// Names (`down_blocks.0.attentions.0.transformer_blocks.0.attn2`) and widths of the
/// cross-attention layers in diffusers' `attn_processors` order (down blocks, up blocks,
/// then the mid block): the order of the adapter's `ip_adapter.{1,3,5,...}` keys.
pub fn ip_attn_layers(cfg: &UNet2DConditionConfig) -> Vec<(String, i64)> {
    let n = cfg.num_blocks();
    let boc = &cfg.block_out_channels;
    let mut out = vec![];
    let mut push = |prefix: String, attentions: i64, layers: i64, width: i64| {
        for a in 0..attentions {
            for t in 0..layers {
                out.push((
                    format!("{prefix}.attentions.{a}.transformer_blocks.{t}.attn2"),
                    width,
                ));
            }
        }
    };
    for i in (0..n).filter(|&i| cfg.is_cross_down(i)) {
        let (layers, tl) = (
            cfg.layers_per_block.get(i),
            cfg.transformer_layers_per_block.get(i),
        );
        push(format!("down_blocks.{i}"), layers, tl, boc[i]);
    }
    for i in (0..n).filter(|&i| cfg.is_cross_up(i)) {
        let r = n - 1 - i;
        let (layers, tl) = (
            cfg.layers_per_block.get(r) + 1,
            cfg.transformer_layers_per_block.get(r),
        );
        push(format!("up_blocks.{i}"), layers, tl, boc[r]);
    }
    push(
        "mid_block".into(),
        1,
        cfg.transformer_layers_per_block.get(n - 1),
        boc[n - 1],
    );
    out
}

/// Hidden widths of the `ip_adapter.{k}` layers, k = 1, 3, 5, ... in order (for writing
/// a matching random adapter).
pub fn ip_attn_hidden_sizes(cfg: &UNet2DConditionConfig) -> Vec<i64> {
    ip_attn_layers(cfg).into_iter().map(|(_, w)| w).collect()
}

#[derive(Debug)]
pub struct UNet2DConditionModel {
    cfg: UNet2DConditionConfig,
    conv_in: nn::Conv2D,
    time_embedding: TimestepEmbedding,
    /// SDXL's `add_embedding` of [pooled text, sinusoids of the six time ids].
    add_embedding: Option<TimestepEmbedding>,
    down_blocks: Vec<DownBlock2D>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<UpBlock2D>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    /// (attn2 name, to_k_ip, to_v_ip) in adapter key order; shares storage with the layers.
    ip_slots: Vec<(String, Tensor, Tensor)>,
}

impl UNet2DConditionModel {
    /// Builds the network under `vs` (the root of the UNet's keys). With `ip`, every
    /// cross-attention gets the (zero) IP-Adapter weights.
    pub fn new(vs: nn::Path, cfg: &UNet2DConditionConfig, ip: Option<IpLayout>) -> Result<Self> {
        cfg.validate()?;
        if let Some(ip) = ip {
            ensure!(ip.token_dim > 0, "IP-Adapter token width must be positive");
        }
        let n = cfg.num_blocks();
        let boc = &cfg.block_out_channels;
        let time_dim = cfg.time_embedding_dim.unwrap_or(4 * boc[0]);
        let common = BlockCommon {
            temb_channels: Some(time_dim),
            groups: cfg.norm_num_groups.unwrap_or(32),
            eps: cfg.norm_eps,
        };
        // Blocks are built in execution order (down, mid, up), so a running count numbers
        // the transformers as the per-block IP weights expect.
        let mut next_index = 0;
        let mut attn = |i: usize, cross: bool, transformers: i64| {
            cross.then(|| {
                let spec = AttnSpec {
                    heads: cfg.attention_head_dim.get(i),
                    transformer_layers: cfg.transformer_layers_per_block.get(i),
                    cross_dim: cfg.cross_attention_dim.get(i),
                    linear_projection: cfg.use_linear_projection,
                    ip: ip.is_some(),
                    first_index: next_index,
                };
                next_index += transformers as usize;
                spec
            })
        };
        let (kin, kout) = (cfg.conv_in_kernel, cfg.conv_out_kernel);
        let conv_in = conv2d(
            &vs / "conv_in",
            cfg.in_channels,
            boc[0],
            kin,
            1,
            (kin - 1) / 2,
        );
        let time_embedding = TimestepEmbedding::new(&vs / "time_embedding", boc[0], time_dim);
        let add_embedding = cfg
            .projection_class_embeddings_input_dim
            .map(|input| TimestepEmbedding::new(&vs / "add_embedding", input, time_dim));
        let down_blocks = (0..n)
            .map(|i| {
                let cin = if i == 0 { boc[0] } else { boc[i - 1] };
                DownBlock2D::new(
                    &vs / "down_blocks" / i,
                    &DownBlockConfig {
                        common,
                        in_channels: cin,
                        out_channels: boc[i],
                        layers: cfg.layers_per_block.get(i),
                        attn: attn(i, cfg.is_cross_down(i), cfg.layers_per_block.get(i)),
                        add_downsample: i + 1 < n,
                        downsample_padding: cfg.downsample_padding,
                    },
                )
            })
            .collect::<Vec<_>>();
        let mid_attn = attn(n - 1, true, 1).expect("mid block has attention");
        let mid_block = UNetMidBlock2DCrossAttn::new(
            &vs / "mid_block",
            common,
            boc[n - 1],
            mid_attn,
            cfg.mid_block_scale_factor,
        );
        let up_blocks = (0..n)
            .map(|i| {
                let r = n - 1 - i;
                let prev = if i == 0 { boc[n - 1] } else { boc[r + 1] };
                let cin = boc[r.saturating_sub(1)];
                UpBlock2D::new(
                    &vs / "up_blocks" / i,
                    &UpBlockConfig {
                        common,
                        in_channels: cin,
                        prev_output_channels: prev,
                        out_channels: boc[r],
                        layers: cfg.layers_per_block.get(r) + 1,
                        attn: attn(r, cfg.is_cross_up(i), cfg.layers_per_block.get(r) + 1),
                        add_upsample: i + 1 < n,
                    },
                )
            })
            .collect::<Vec<_>>();
        let conv_norm_out = group_norm(&vs / "conv_norm_out", common.groups, boc[0], cfg.norm_eps);
        let conv_out = conv2d(
            &vs / "conv_out",
            boc[0],
            cfg.out_channels,
            kout,
            1,
            (kout - 1) / 2,
        );

        let mut model = UNet2DConditionModel {
            cfg: cfg.clone(),
            conv_in,
            time_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            ip_slots: vec![],
        };
        if ip.is_some() {
            model.ip_slots = model.collect_ip_slots();
        }
        Ok(model)
    }

    /// The IP weights of every cross-attention, in diffusers' `attn_processors` order.
    fn collect_ip_slots(&self) -> Vec<(String, Tensor, Tensor)> {
        let transformers = self
            .down_blocks
            .iter()
            .flat_map(|b| b.attentions())
            .chain(self.up_blocks.iter().flat_map(|b| b.attentions()))
            .chain(self.mid_block.attentions());
        let weights: Vec<&IpWeights> = transformers
            .flat_map(|t| t.blocks())
            .filter_map(|block| block.cross_attention().ip_weights())
            .collect();
        let names = ip_attn_layers(&self.cfg);
        assert_eq!(
            names.len(),
            weights.len(),
            "IP layer walk and config disagree"
        );
        names
            .into_iter()
            .zip(weights)
            .map(|((name, _), w)| (name, w.to_k_ip.shallow_clone(), w.to_v_ip.shallow_clone()))
            .collect()
    }

    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.cfg
    }

    /// Cross-attention transformers, numbered in execution order by the per-block weights.
    pub fn cross_attention_blocks(&self) -> usize {
        self.cfg.cross_attention_blocks()
    }

    /// `scales` ([B] or [blocks, B]) as [blocks, B, 1, 1].
    fn block_scales(&self, scales: &Tensor, b: i64) -> Tensor {
        let n = self.cross_attention_blocks() as i64;
        let scales = match scales.dim() {
            1 => scales.unsqueeze(0).expand([n, b], false),
            _ => scales.shallow_clone(),
        };
        assert_eq!(
            scales.size(),
            [n, b],
            "IP scales must be [rows] or [blocks, rows] ({n} blocks, {b} rows)"
        );
        scales.reshape([n, b, 1, 1])
    }

    /// The kind the UNet computes in.
    pub fn kind(&self) -> Kind {
        self.conv_in.ws.kind()
    }

    /// True when the UNet was built with the IP-Adapter branch.
    pub fn has_ip(&self) -> bool {
        !self.ip_slots.is_empty()
    }

    /// Builds the UNet on `device` in `kind` and loads it from `source` (a diffusers
    /// `diffusion_pytorch_model*.safetensors`, or a renaming view of a single-file
    /// checkpoint). Every weight must be present with the right shape.
    pub fn from_source(
        source: &dyn TensorSource,
        cfg: &UNet2DConditionConfig,
        device: Device,
        kind: Kind,
        ip: Option<IpLayout>,
    ) -> Result<Self> {
        // The IP weights come from the adapter file, not from the UNet's.
        let key_for = |name: &str| (!name.contains(".processor.")).then(|| name.to_string());
        weights::build_and_load(source, device, kind, key_for, |root| {
            Self::new(root, cfg, ip)
        })
    }

    /// Loads a diffusers `unet/` folder (config.json + diffusion_pytorch_model.safetensors
    /// or its `.fp16` variant), or a weights file with config.json beside it.
    pub fn load(path: &Path, device: Device, kind: Kind, ip: Option<IpLayout>) -> Result<Self> {
        let (config, weights) = component_files(path, kind)?;
        let cfg = UNet2DConditionConfig::from_json_file(&config)?;
        let file = TensorFile::open(&weights)?;
        Self::from_source(&file, &cfg, device, kind, ip)
    }

    /// Copies `ip_adapter.{k}.to_k_ip.weight` / `to_v_ip.weight` (k = 1, 3, 5, ...) of an
    /// IP-Adapter file into the cross-attention layers.
    pub fn load_ip_adapter(&mut self, source: &dyn TensorSource) -> Result<()> {
        let origin = source.origin().display();
        ensure!(
            self.has_ip(),
            "{origin}: this UNet was built without IP-Adapter layers; build it with an IpLayout"
        );
        let in_file = source
            .names()
            .iter()
            .filter(|n| n.starts_with("ip_adapter.") && n.ends_with(".to_k_ip.weight"))
            .count();
        if in_file != self.ip_slots.len() {
            bail!(
                "{origin}: the adapter has {in_file} cross-attention layers (ip_adapter.*.to_k_ip.weight), \
                 this UNet has {}; the adapter is for another base model",
                self.ip_slots.len()
            );
        }
        // Check every shape before copying anything, so a bad file leaves the UNet as it was.
        let mut copies = vec![];
        for (i, (layer, k_var, v_var)) in self.ip_slots.iter().enumerate() {
            let k = 2 * i + 1;
            for (what, var) in [("to_k_ip", k_var), ("to_v_ip", v_var)] {
                let key = format!("ip_adapter.{k}.{what}.weight");
                let expected: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
                let Some(found) = source.shape(&key) else {
                    bail!(
                        "{origin}: tensor {key:?} is missing (expected shape {expected:?} for {layer})"
                    );
                };
                if found != expected {
                    bail!(
                        "{origin}: tensor {key:?} has shape {found:?}, {layer} expects {expected:?} \
                         (the adapter does not fit this UNet's widths)"
                    );
                }
                copies.push((key, var.shallow_clone()));
            }
        }
        for (key, mut var) in copies {
            let value = source.get(&key, var.device(), var.kind())?;
            tch::no_grad(|| var.copy_(&value));
        }
        Ok(())
    }

    /// Noise prediction for one timestep shared by all rows. `text` [B, M, cross]; `ip`:
    /// the image tokens and weights ([`IpInput`]). Inputs are cast to the model's kind; the
    /// output is in the model's kind.
    pub fn forward(
        &self,
        latents: &Tensor,
        timestep: f64,
        text: &Tensor,
        ip: Option<IpInput>,
    ) -> Tensor {
        let b = latents.size()[0];
        // diffusers turns a float timestep into an fp32 tensor before embedding it.
        let t = Tensor::full([b], timestep, (Kind::Float, latents.device()));
        self.forward_timesteps(latents, &t, text, ip)
    }

    /// As [`forward`](Self::forward), with what the negative methods add in the attention
    /// layers ([`Hooks`]).
    pub fn forward_hooked(
        &self,
        latents: &Tensor,
        timestep: f64,
        text: &Tensor,
        ip: Option<IpInput>,
        hooks: Hooks,
    ) -> Tensor {
        let b = latents.size()[0];
        let t = Tensor::full([b], timestep, (Kind::Float, latents.device()));
        self.forward_rows(latents, &t, text, ip, hooks)
    }

    /// As [`forward`](Self::forward) with one timestep per row ([B], any numeric kind).
    pub fn forward_timesteps(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &Tensor,
        ip: Option<IpInput>,
    ) -> Tensor {
        self.forward_rows(latents, timesteps, text, ip, Hooks::default())
    }

    /// Whether the UNet takes SDXL's added conditioning ([`Hooks::text_time`]).
    pub fn takes_text_time(&self) -> bool {
        self.add_embedding.is_some()
    }

    /// The time embedding [B, time_dim] of `timesteps` [B], plus SDXL's added embedding.
    fn embed_time(&self, timesteps: &Tensor, text_time: Option<TextTime>) -> Tensor {
        let kind = self.kind();
        let device = timesteps.device();
        let t_emb = timestep_embedding(
            timesteps,
            self.cfg.block_out_channels[0],
            self.cfg.flip_sin_to_cos,
            self.cfg.freq_shift,
        )
        .to_kind(kind);
        let emb = self.time_embedding.forward(&t_emb);
        match (&self.add_embedding, text_time) {
            (None, None) => emb,
            (Some(add), Some(tt)) => {
                let b = timesteps.size()[0];
                let dim = self.cfg.addition_time_embed_dim.unwrap_or(0);
                let ids = tt.time_ids.to_device(device).reshape([-1]);
                let time_embeds =
                    timestep_embedding(&ids, dim, self.cfg.flip_sin_to_cos, self.cfg.freq_shift)
                        .reshape([b, -1]);
                let text_embeds = tt.text_embeds.to_device(device);
                let added =
                    Tensor::cat(&[text_embeds.to_kind(kind), time_embeds.to_kind(kind)], -1);
                emb + add.forward(&added)
            }
            (Some(_), None) => panic!(
                "this UNet (addition_embed_type \"text_time\") needs the pooled text and time ids"
            ),
            (None, Some(_)) => panic!("pooled text and time ids given to a UNet without text_time"),
        }
    }

    /// The general call: one timestep per row ([B], any numeric kind) and [`Hooks`].
    pub fn forward_rows(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        text: &Tensor,
        ip: Option<IpInput>,
        hooks: Hooks,
    ) -> Tensor {
        let kind = self.conv_in.ws.kind();
        let device = self.conv_in.ws.device();
        let mut x = latents.to_device(device).to_kind(kind);
        let (b, _, h, w) = x.size4().expect("latents are [B,C,H,W]");
        if self.cfg.center_input_sample {
            x = x * 2.0 - 1.0;
        }
        let timesteps = timesteps.to_device(device).expand([b], false);
        let emb = self.embed_time(&timesteps, hooks.text_time);

        let text = text.to_device(device).to_kind(kind);
        let ip_tokens = ip
            .as_ref()
            .map(|ip| ip.tokens.to_device(device).to_kind(kind));
        let extra = hooks
            .extra
            .map(|x| (x, x.tokens.to_device(device).to_kind(kind)));
        let ctx = CrossAttnContext {
            text: &text,
            ip: ip
                .as_ref()
                .zip(ip_tokens.as_ref())
                .map(|(ip, tokens)| IpContext {
                    tokens,
                    scales: self
                        .block_scales(ip.scales, b)
                        .to_device(device)
                        .to_kind(kind),
                    scaling: ip.scaling,
                    extra: extra.as_ref().map(|(x, tokens)| ExtraContext {
                        rows: x.rows,
                        tokens,
                        scales: self
                            .block_scales(x.scales, x.rows.size()[0])
                            .to_device(device)
                            .to_kind(kind),
                        nag: x.nag,
                    }),
                    probe: hooks.probe,
                }),
            negtome: None,
        };

        // Upsample to the skip's size when H or W is not a multiple of the total factor.
        let factor = 1i64 << (self.cfg.num_blocks() - 1);
        let odd_size = h % factor != 0 || w % factor != 0;

        let mut x = self.conv_in.forward(&x);
        let mut skips = vec![x.shallow_clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&x, &emb, &ctx);
            x = out;
            skips.extend(states);
        }
        x = self.mid_block.forward(&x, &emb, &ctx);
        // NegToMe merges in the up blocks only (the reference code's `blocks = ['up_blocks']`).
        let ctx = CrossAttnContext {
            negtome: hooks.merge,
            ..ctx
        };
        for (i, block) in self.up_blocks.iter().enumerate() {
            let used = skips.split_off(skips.len() - block.num_resnets());
            let upsample_size = match (odd_size, skips.last()) {
                (true, Some(next)) if i + 1 < self.up_blocks.len() => {
                    let s = next.size();
                    Some((s[2], s[3]))
                }
                _ => None,
            };
            x = block.forward(&x, &used, &emb, &ctx, upsample_size);
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&x).silu())
    }
}

/// What one UNet call takes besides latents, timesteps, text states and image tokens:
/// SDXL's added conditioning, and what the negative methods add inside the attention layers.
#[derive(Default)]
pub struct Hooks<'a> {
    /// SDXL's pooled text and time ids, for a `text_time` UNet (required there).
    pub text_time: Option<TextTime<'a>>,
    /// NegToMe's token merge (up blocks).
    pub merge: Option<TokenMerge>,
    /// A second image-attention term of some rows (`cond_negative`).
    pub extra: Option<ExtraIp<'a>>,
    /// Records attention maps (of the IP-Adapter's image attention) when set.
    pub probe: Option<&'a AttentionProbe>,
}

/// SDXL's added conditioning of each row (`added_cond_kwargs` of diffusers' UNet).
#[derive(Clone, Copy)]
pub struct TextTime<'a> {
    /// The second text encoder's pooled, projected embedding [B, pooled width].
    pub text_embeds: &'a Tensor,
    /// (original height, width, crop top, left, target height, width) [B, 6].
    pub time_ids: &'a Tensor,
}

/// A second image-attention term added to the rows `rows` [S] (int64): tokens
/// [S, T, cross] and weights [S] or [blocks, S], with the call's [`IpInput::scaling`];
/// NAG's negative instead on the rows `nag` marks (on the UNet's device, in its kind).
#[derive(Clone, Copy)]
pub struct ExtraIp<'a> {
    pub rows: &'a Tensor,
    pub tokens: &'a Tensor,
    pub scales: &'a Tensor,
    pub nag: Option<&'a Nag>,
}

/// The IP-Adapter input of one UNet call.
#[derive(Clone, Copy)]
pub struct IpInput<'a> {
    /// Image tokens [B, T, cross].
    pub tokens: &'a Tensor,
    /// The weight of each row: [B] for every block alike, or [blocks, B] per cross-attention
    /// block in execution order ([`UNet2DConditionConfig::cross_attention_blocks`]).
    pub scales: &'a Tensor,
    pub scaling: IpScaling,
}

impl<'a> IpInput<'a> {
    /// One weight per row for every block, "V only" scaling (the official IP-Adapter's).
    pub fn uniform(tokens: &'a Tensor, scales: &'a Tensor) -> Self {
        IpInput {
            tokens,
            scales,
            scaling: IpScaling::V,
        }
    }
}

/// The config.json and weight file of a diffusers component folder (or of a weight file
/// with config.json beside it). For fp16 loading the `.fp16.safetensors` variant is
/// preferred when present (half the bytes to read), otherwise the full-precision file.
pub fn component_files(path: &Path, kind: Kind) -> Result<(PathBuf, PathBuf)> {
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Ok((dir.join("config.json"), path.to_path_buf()));
    }
    ensure!(
        path.is_dir(),
        "{}: no such model folder or file",
        path.display()
    );
    let config = path.join("config.json");
    ensure!(
        config.is_file(),
        "{}: config.json is missing",
        path.display()
    );
    let weights = crate::weights::pipeline_folder::find_weights(
        path,
        "diffusion_pytorch_model",
        kind == Kind::Half,
    )?;
    Ok((config, weights))
}

/// Writes `dir/config.json` and the variables of `vs` as
/// `diffusion_pytorch_model.safetensors` (fp32) and, with `fp16_variant`, also
/// `diffusion_pytorch_model.fp16.safetensors`.
pub(crate) fn save_component(
    dir: &Path,
    config_json: &str,
    vs: &nn::VarStore,
    fp16_variant: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = dir.join("config.json");
    std::fs::write(&config, config_json)
        .with_context(|| format!("cannot write {}", config.display()))?;
    weights::random::save_var_store(
        vs,
        &dir.join("diffusion_pytorch_model.safetensors"),
        Kind::Float,
    )?;
    if fp16_variant {
        weights::random::save_var_store(
            vs,
            &dir.join("diffusion_pytorch_model.fp16.safetensors"),
            Kind::Half,
        )?;
    }
    Ok(())
}

/// Writes a diffusers `unet/` folder with seeded random weights (no IP layers).
pub fn write_random_model(
    dir: &Path,
    cfg: &UNet2DConditionConfig,
    seed: i64,
    fp16_variant: bool,
) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        UNet2DConditionModel::new(root, cfg, None).map(drop)
    })?;
    save_component(dir, &cfg.to_config_json(), &vs, fp16_variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_ip_layers_follow_reference_order() {
        let widths = ip_attn_hidden_sizes(&UNet2DConditionConfig::sd15());
        let expected = [
            320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280,
        ];
        assert_eq!(widths, expected);
        let names: Vec<String> = ip_attn_layers(&UNet2DConditionConfig::sd15())
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(
            names[0],
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
        );
        assert_eq!(
            names[6],
            "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
        );
        assert_eq!(
            names[15],
            "mid_block.attentions.0.transformer_blocks.0.attn2"
        );
    }

    #[test]
    fn cross_attention_blocks_are_numbered_in_execution_order() {
        assert_eq!(UNet2DConditionConfig::sd15().cross_attention_blocks(), 16);
        assert_eq!(
            UNet2DConditionConfig::tiny_sd15_layout().cross_attention_blocks(),
            16
        );
        let cfg = UNet2DConditionConfig::tiny();
        assert_eq!(cfg.cross_attention_blocks(), 6);
        let vs = nn::VarStore::new(Device::Cpu);
        let unet =
            UNet2DConditionModel::new(vs.root(), &cfg, Some(IpLayout::for_config(&cfg))).unwrap();
        let index = |t: &crate::models::attention::Transformer2DModel| t.index();
        let down: Vec<usize> = unet
            .down_blocks
            .iter()
            .flat_map(|b| b.attentions())
            .map(index)
            .collect();
        let mid: Vec<usize> = unet.mid_block.attentions().iter().map(index).collect();
        let up: Vec<usize> = unet
            .up_blocks
            .iter()
            .flat_map(|b| b.attentions())
            .map(index)
            .collect();
        assert_eq!((down, mid, up), (vec![0, 1], vec![2], vec![3, 4, 5]));
    }

    #[test]
    fn tiny_model_walk_matches_config_and_shapes() {
        let cfg = UNet2DConditionConfig::tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let unet =
            UNet2DConditionModel::new(vs.root(), &cfg, Some(IpLayout::for_config(&cfg))).unwrap();
        let widths: Vec<i64> = unet.ip_slots.iter().map(|s| s.1.size()[0]).collect();
        assert_eq!(widths, ip_attn_hidden_sizes(&cfg));
        let variables = vs.variables();
        assert!(variables.contains_key(
            "down_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"
        ));
        assert!(
            variables
                .contains_key("up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj.weight")
        );
        assert!(variables.contains_key("mid_block.resnets.1.time_emb_proj.bias"));
        let x = Tensor::randn([2, 4, 8, 8], (Kind::Float, Device::Cpu));
        let text = Tensor::randn([2, 5, 32], (Kind::Float, Device::Cpu));
        let tokens = Tensor::randn([2, 4, 32], (Kind::Float, Device::Cpu));
        let scale = Tensor::from_slice(&[0.5f32, 1.0]);
        let ip = IpInput::uniform(&tokens, &scale);
        let out = tch::no_grad(|| unet.forward(&x, 10.0, &text, Some(ip)));
        assert_eq!(out.size(), [2, 4, 8, 8]);
        // A size that is not a multiple of the downsampling factor still round-trips.
        let x = Tensor::randn([1, 4, 7, 9], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| unet.forward(&x, 10.0, &text.narrow(0, 0, 1), None));
        assert_eq!(out.size(), [1, 4, 7, 9]);
    }

    /// Writes `json` as a config.json and reads it back: the path and the error message.
    fn read_error(json: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        let err = UNet2DConditionConfig::from_json_file(&path).unwrap_err();
        (path.display().to_string(), format!("{err:#}"))
    }

    #[test]
    fn option_values_are_diffusers_names_and_others_fail_naming_file_and_key() {
        let json: serde_json::Value =
            serde_json::from_str(&UNet2DConditionConfig::sd15().to_config_json()).unwrap();
        assert_eq!(json["down_block_types"][0], "CrossAttnDownBlock2D");
        assert_eq!(json["up_block_types"][0], "UpBlock2D");
        assert_eq!(json["mid_block_type"], "UNetMidBlock2DCrossAttn");
        assert_eq!(json["act_fn"], "silu");
        assert_eq!(json["resnet_time_scale_shift"], "default");
        assert_eq!(json["time_embedding_type"], "positional");
        assert_eq!(json["attention_type"], "default");
        for (json, key, allowed) in [
            (
                r#"{"down_block_types": ["CrossAttnDownBlock2D", "DownBlok2D"]}"#,
                "down_block_types",
                &["`CrossAttnDownBlock2D`", "`DownBlock2D`"][..],
            ),
            // Values diffusers writes that this UNet does not compute.
            (
                r#"{"up_block_types": ["AttnUpBlock2D"]}"#,
                "up_block_types",
                &["`CrossAttnUpBlock2D`", "`UpBlock2D`"],
            ),
            (
                r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
                "mid_block_type",
                &["`UNetMidBlock2DCrossAttn`"],
            ),
            (r#"{"act_fn": "gelu"}"#, "act_fn", &["`silu`"]),
            (
                r#"{"resnet_time_scale_shift": "scale_shift"}"#,
                "resnet_time_scale_shift",
                &["`default`"],
            ),
            (
                r#"{"time_embedding_type": "fourier"}"#,
                "time_embedding_type",
                &["`positional`"],
            ),
            (
                r#"{"attention_type": "gated"}"#,
                "attention_type",
                &["`default`"],
            ),
        ] {
            let (path, msg) = read_error(json);
            assert!(msg.contains(&path), "{msg}");
            assert!(msg.contains(&format!("key \"{key}\"")), "{msg}");
            for value in allowed {
                assert!(msg.contains(value), "{msg}");
            }
        }
        let (path, msg) = read_error(r#"{"mid_block_type": null}"#);
        assert!(
            msg.contains(&path) && msg.contains("mid_block_type"),
            "{msg}"
        );
    }

    #[test]
    fn config_json_round_trips_and_rejects_unsupported() {
        let cfg = UNet2DConditionConfig::sd15();
        let back: UNet2DConditionConfig = serde_json::from_str(&cfg.to_config_json()).unwrap();
        assert_eq!(back, cfg);
        let sdxl = r#"{"addition_embed_type": "text_time", "attention_head_dim": [5, 10, 20, 20], "some_new_key": 1}"#;
        let cfg: UNet2DConditionConfig = serde_json::from_str(sdxl).unwrap();
        assert_eq!(cfg.attention_head_dim.get(2), 20);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("addition_time_embed_dim"), "{err}");
        let gligen = r#"{"class_embed_type": "timestep"}"#;
        let cfg: UNet2DConditionConfig = serde_json::from_str(gligen).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("class_embed_type"), "{err}");
    }
}
