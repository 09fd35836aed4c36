//! The UNet's down, mid and up blocks, and the VAE's encoder/decoder blocks (diffusers
//! `unet_2d_blocks.py`). A block with `attentions` is the `CrossAttn*` variant.
use crate::models::attention::{
    CrossAttnContext, SpatialSelfAttention, Transformer2DModel, TransformerConfig,
};
use crate::models::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use tch::{Tensor, nn, nn::Module};

/// What every block of one network shares.
#[derive(Clone, Copy, Debug)]
pub struct BlockCommon {
    pub temb_channels: Option<i64>,
    pub groups: i64,
    pub eps: f64,
}

impl BlockCommon {
    fn resnet(&self, vs: nn::Path, cin: i64, cout: i64) -> ResnetBlock2D {
        ResnetBlock2D::new(
            vs,
            ResnetConfig {
                in_channels: cin,
                out_channels: cout,
                temb_channels: self.temb_channels,
                groups: self.groups,
                eps: self.eps,
                output_scale_factor: 1.0,
            },
        )
    }

    /// `layers` resnets under `vs/resnets` from `cin` to `cout` channels (the first takes
    /// `cin`, the others `cout`).
    fn chained_resnets(
        &self,
        vs: &nn::Path,
        layers: i64,
        cin: i64,
        cout: i64,
    ) -> Vec<ResnetBlock2D> {
        (0..layers)
            .map(|i| {
                let input = if i == 0 { cin } else { cout };
                self.resnet(vs / "resnets" / i, input, cout)
            })
            .collect()
    }
}

/// Cross-attention settings of a `CrossAttn*` block; `None` for a plain block.
#[derive(Clone, Copy, Debug)]
pub struct AttnSpec {
    pub heads: i64,
    pub transformer_layers: i64,
    pub cross_dim: i64,
    pub linear_projection: bool,
    pub ip: bool,
    /// The execution-order number of the block's first transformer; the i-th gets
    /// `first_index + i`.
    pub first_index: usize,
}

/// The `i`-th transformer of a block.
fn transformer(
    vs: nn::Path,
    channels: i64,
    groups: i64,
    a: AttnSpec,
    i: usize,
) -> Transformer2DModel {
    Transformer2DModel::new(
        vs,
        TransformerConfig {
            channels,
            heads: a.heads,
            layers: a.transformer_layers,
            cross_dim: a.cross_dim,
            groups,
            linear_projection: a.linear_projection,
            ip: a.ip,
            index: a.first_index + i,
        },
    )
}

/// The shape of a [`DownBlock2D`] (diffusers' constructor arguments).
#[derive(Clone, Copy, Debug)]
pub struct DownBlockConfig {
    pub common: BlockCommon,
    pub in_channels: i64,
    pub out_channels: i64,
    pub layers: i64,
    /// `Some`: `CrossAttnDownBlock2D`, a transformer after each resnet.
    pub attn: Option<AttnSpec>,
    /// A stride-2 downsampler at the end (all blocks but the last).
    pub add_downsample: bool,
    pub downsample_padding: i64,
}

/// `CrossAttnDownBlock2D` / `DownBlock2D`.
#[derive(Debug)]
pub struct DownBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock2D {
    pub fn new(vs: nn::Path, c: &DownBlockConfig) -> Self {
        let cout = c.out_channels;
        let resnets = c.common.chained_resnets(&vs, c.layers, c.in_channels, cout);
        let attentions = match c.attn {
            Some(a) => (0..c.layers)
                .map(|i| transformer(&vs / "attentions" / i, cout, c.common.groups, a, i as usize))
                .collect(),
            None => vec![],
        };
        let downsampler = c
            .add_downsample
            .then(|| Downsample2D::new(&vs / "downsamplers" / 0, cout, c.downsample_padding));
        DownBlock2D {
            resnets,
            attentions,
            downsampler,
        }
    }

    pub fn attentions(&self) -> &[Transformer2DModel] {
        &self.attentions
    }

    /// Returns the output and the states kept for the skip connections of the up path.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        ctx: &CrossAttnContext,
    ) -> (Tensor, Vec<Tensor>) {
        let mut xs = xs.shallow_clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            xs = resnet.forward(&xs, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward(&xs, ctx);
            }
            states.push(xs.shallow_clone());
        }
        if let Some(down) = &self.downsampler {
            xs = down.forward(&xs);
            states.push(xs.shallow_clone());
        }
        (xs, states)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet) pairs.
#[derive(Debug)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    pub fn new(
        vs: nn::Path,
        common: BlockCommon,
        channels: i64,
        attn: AttnSpec,
        scale: f64,
    ) -> Self {
        // diffusers passes `mid_block_scale_factor` as the resnets' output scale factor.
        let resnet = |i: i64| {
            ResnetBlock2D::new(
                &vs / "resnets" / i,
                ResnetConfig {
                    in_channels: channels,
                    out_channels: channels,
                    temb_channels: common.temb_channels,
                    groups: common.groups,
                    eps: common.eps,
                    output_scale_factor: scale,
                },
            )
        };
        UNetMidBlock2DCrossAttn {
            resnets: vec![resnet(0), resnet(1)],
            attentions: vec![transformer(
                &vs / "attentions" / 0,
                channels,
                common.groups,
                attn,
                0,
            )],
        }
    }

    pub fn attentions(&self) -> &[Transformer2DModel] {
        &self.attentions
    }

    pub fn forward(&self, xs: &Tensor, temb: &Tensor, ctx: &CrossAttnContext) -> Tensor {
        let mut xs = self.resnets[0].forward(xs, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            xs = resnet.forward(&attn.forward(&xs, ctx), Some(temb));
        }
        xs
    }
}

/// The shape of an [`UpBlock2D`] (diffusers' constructor arguments).
#[derive(Clone, Copy, Debug)]
pub struct UpBlockConfig {
    pub common: BlockCommon,
    /// Channels of the skip state that enters the last resnet.
    pub in_channels: i64,
    /// Channels of the previous block's output, which enters the first resnet.
    pub prev_output_channels: i64,
    pub out_channels: i64,
    pub layers: i64,
    /// `Some`: `CrossAttnUpBlock2D`, a transformer after each resnet.
    pub attn: Option<AttnSpec>,
    /// A 2x upsampler at the end (all blocks but the last).
    pub add_upsample: bool,
}

/// `CrossAttnUpBlock2D` / `UpBlock2D`: each resnet takes the previous output concatenated
/// with one skip state (popped from the end).
#[derive(Debug)]
pub struct UpBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock2D {
    pub fn new(vs: nn::Path, c: &UpBlockConfig) -> Self {
        let cout = c.out_channels;
        let resnets = (0..c.layers)
            .map(|i| {
                let skip = if i == c.layers - 1 {
                    c.in_channels
                } else {
                    cout
                };
                let input = if i == 0 { c.prev_output_channels } else { cout };
                c.common.resnet(&vs / "resnets" / i, input + skip, cout)
            })
            .collect();
        let attentions = match c.attn {
            Some(a) => (0..c.layers)
                .map(|i| transformer(&vs / "attentions" / i, cout, c.common.groups, a, i as usize))
                .collect(),
            None => vec![],
        };
        let upsampler = c
            .add_upsample
            .then(|| Upsample2D::new(&vs / "upsamplers" / 0, cout));
        UpBlock2D {
            resnets,
            attentions,
            upsampler,
        }
    }

    pub fn num_resnets(&self) -> usize {
        self.resnets.len()
    }

    pub fn attentions(&self) -> &[Transformer2DModel] {
        &self.attentions
    }

    pub fn forward(
        &self,
        xs: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        ctx: &CrossAttnContext,
        upsample_size: Option<(i64, i64)>,
    ) -> Tensor {
        let mut xs = xs.shallow_clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = &skips[skips.len() - 1 - i];
            xs = resnet.forward(&Tensor::cat(&[&xs, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                xs = attn.forward(&xs, ctx);
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&xs, upsample_size),
            None => xs,
        }
    }
}

/// `UNetMidBlock2D` of the VAE: resnet, self-attention, resnet (no time embedding).
#[derive(Debug)]
pub struct UNetMidBlock2D {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<SpatialSelfAttention>,
}

impl UNetMidBlock2D {
    pub fn new(vs: nn::Path, common: BlockCommon, channels: i64, add_attention: bool) -> Self {
        UNetMidBlock2D {
            resnets: (0..2)
                .map(|i| common.resnet(&vs / "resnets" / i, channels, channels))
                .collect(),
            attention: add_attention.then(|| {
                SpatialSelfAttention::new(
                    &vs / "attentions" / 0,
                    channels,
                    common.groups,
                    common.eps,
                )
            }),
        }
    }
}

impl Module for UNetMidBlock2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut xs = self.resnets[0].forward(xs, None);
        if let Some(attn) = &self.attention {
            xs = attn.forward(&xs);
        }
        self.resnets[1].forward(&xs, None)
    }
}

/// `DownEncoderBlock2D` (VAE encoder) and `UpDecoderBlock2D` (VAE decoder): resnets, then
/// an optional down- or upsampler.
#[derive(Debug)]
pub struct CoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    resample: Resampler,
}

#[derive(Debug)]
enum Resampler {
    Down(Downsample2D),
    Up(Upsample2D),
    None,
}

/// What follows the resnets of a [`CoderBlock2D`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Stride-2 convolution with right/bottom padding (VAE encoder).
    Down,
    /// Nearest 2x and a convolution (VAE decoder).
    Up,
    None,
}

/// The shape of a [`CoderBlock2D`].
#[derive(Clone, Copy, Debug)]
pub struct CoderBlockConfig {
    pub common: BlockCommon,
    pub in_channels: i64,
    pub out_channels: i64,
    pub layers: i64,
    pub resample: Resample,
}

impl CoderBlock2D {
    pub fn new(vs: nn::Path, c: &CoderBlockConfig) -> Self {
        let cout = c.out_channels;
        let resnets = c.common.chained_resnets(&vs, c.layers, c.in_channels, cout);
        let resample = match c.resample {
            Resample::Down => Resampler::Down(Downsample2D::new(&vs / "downsamplers" / 0, cout, 0)),
            Resample::Up => Resampler::Up(Upsample2D::new(&vs / "upsamplers" / 0, cout)),
            Resample::None => Resampler::None,
        };
        CoderBlock2D { resnets, resample }
    }
}

impl Module for CoderBlock2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut xs = xs.shallow_clone();
        for resnet in &self.resnets {
            xs = resnet.forward(&xs, None);
        }
        match &self.resample {
            Resampler::Down(down) => down.forward(&xs),
            Resampler::Up(up) => up.forward(&xs, None),
            Resampler::None => xs,
        }
    }
}
