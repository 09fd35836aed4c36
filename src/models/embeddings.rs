//! Timestep embeddings of the UNet (diffusers `Timesteps` + `TimestepEmbedding`).
use tch::{Kind, Tensor, nn, nn::Module};

/// Sinusoidal embedding of `timesteps` [B] into [B, dim], computed in fp32 as diffusers does
/// (`get_timestep_embedding`, max_period 10000, scale 1); the caller casts to the model kind.
pub fn timestep_embedding(
    timesteps: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (Kind::Float, timesteps.device())) * (-(10000f64.ln()))
        / (half as f64 - downscale_freq_shift);
    let args = timesteps.to_kind(Kind::Float).unsqueeze(1) * exponent.exp().unsqueeze(0);
    let (sin, cos) = (args.sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[cos, sin], -1)
    } else {
        Tensor::cat(&[sin, cos], -1)
    };
    if dim % 2 == 1 {
        emb.constant_pad_nd([0, 1])
    } else {
        emb
    }
}

/// `linear_2(silu(linear_1(t_emb)))`.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: nn::Linear,
    linear_2: nn::Linear,
}

impl TimestepEmbedding {
    pub fn new(vs: nn::Path, in_dim: i64, embed_dim: i64) -> Self {
        let linear_1 = nn::linear(&vs / "linear_1", in_dim, embed_dim, Default::default());
        let linear_2 = nn::linear(&vs / "linear_2", embed_dim, embed_dim, Default::default());
        TimestepEmbedding { linear_1, linear_2 }
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, xs: &Tensor) -> Tensor {
        self.linear_2.forward(&self.linear_1.forward(xs).silu())
    }
}
