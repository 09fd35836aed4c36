//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` as in diffusers (time-embedding norm
//! "default": the projected embedding is added after conv1).
use serde::{Deserialize, Serialize};
use tch::{Tensor, nn, nn::Module};

/// `act_fn` of the UNet and VAE configs: the nonlinearity of the resnets and the output
/// head. diffusers' other activations (`mish`, `gelu`, ...) are not implemented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActFn {
    Silu,
}

pub(crate) fn group_norm(vs: nn::Path, groups: i64, channels: i64, eps: f64) -> nn::GroupNorm {
    let cfg = nn::GroupNormConfig {
        eps,
        ..Default::default()
    };
    nn::group_norm(vs, groups, channels, cfg)
}

pub(crate) fn conv2d(
    vs: nn::Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    pad: i64,
) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: pad,
        ..Default::default()
    };
    nn::conv2d(vs, c_in, c_out, k, cfg)
}

#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: Option<nn::Linear>,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    output_scale_factor: f64,
}

/// Shape of one resnet block; `temb_channels` is `None` in the VAE.
#[derive(Clone, Copy, Debug)]
pub struct ResnetConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub temb_channels: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(vs: nn::Path, c: ResnetConfig) -> Self {
        let (cin, cout) = (c.in_channels, c.out_channels);
        ResnetBlock2D {
            norm1: group_norm(&vs / "norm1", c.groups, cin, c.eps),
            conv1: conv2d(&vs / "conv1", cin, cout, 3, 1, 1),
            time_emb_proj: c
                .temb_channels
                .map(|t| nn::linear(&vs / "time_emb_proj", t, cout, Default::default())),
            norm2: group_norm(&vs / "norm2", c.groups, cout, c.eps),
            conv2: conv2d(&vs / "conv2", cout, cout, 3, 1, 1),
            // A 1x1 convolution matches the channels of the residual path when they change.
            conv_shortcut: (cin != cout).then(|| conv2d(&vs / "conv_shortcut", cin, cout, 1, 1, 0)),
            output_scale_factor: c.output_scale_factor,
        }
    }

    /// `temb` is the UNet's time embedding [B, temb_channels] (before the block's SiLU).
    pub fn forward(&self, xs: &Tensor, temb: Option<&Tensor>) -> Tensor {
        let mut h = self.conv1.forward(&self.norm1.forward(xs).silu());
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h += proj.forward(&temb.silu()).unsqueeze(-1).unsqueeze(-1);
        }
        let h = self.conv2.forward(&self.norm2.forward(&h).silu());
        let residual = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs),
            None => xs.shallow_clone(),
        };
        let out = residual + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// Stride-2 3x3 convolution (`downsamplers.0.conv`). With `padding == 0` (VAE encoder) the
/// input is padded by one on the right and bottom only, as diffusers does.
#[derive(Debug)]
pub struct Downsample2D {
    conv: nn::Conv2D,
    padding: i64,
}

impl Downsample2D {
    pub fn new(vs: nn::Path, channels: i64, padding: i64) -> Self {
        let conv = conv2d(&vs / "conv", channels, channels, 3, 2, padding);
        Downsample2D { conv, padding }
    }
}

impl Module for Downsample2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        if self.padding == 0 {
            self.conv.forward(&xs.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(xs)
        }
    }
}

/// Nearest-neighbour 2x upsampling (or to `size`, when the UNet input is not a multiple of
/// its total downsampling factor) followed by a 3x3 convolution (`upsamplers.0.conv`).
#[derive(Debug)]
pub struct Upsample2D {
    conv: nn::Conv2D,
}

impl Upsample2D {
    pub fn new(vs: nn::Path, channels: i64) -> Self {
        Upsample2D {
            conv: conv2d(&vs / "conv", channels, channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, xs: &Tensor, size: Option<(i64, i64)>) -> Tensor {
        let (_, _, h, w) = xs.size4().expect("Upsample2D expects [B,C,H,W]");
        let up = match size {
            Some((oh, ow)) => xs.upsample_nearest2d([oh, ow], None, None),
            None => xs.upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0),
        };
        self.conv.forward(&up)
    }
}
