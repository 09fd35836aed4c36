//! Attention layers: the UNet's transformer blocks, whose cross-attention (`attn2`) can
//! carry the decoupled IP-Adapter branch, and the VAE's single-head spatial self-attention.
use crate::models::resnet::{conv2d, group_norm};
use crate::params::IpScaling;
use tch::{Kind, Tensor, nn, nn::Module};

/// The image-prompt side of one UNet call: IP-Adapter tokens [B, T, cross_dim], the weight
/// of the image attention for each cross-attention block and batch row, already shaped
/// [blocks, B, 1, 1] in the model's kind, and how the weight enters the attention.
pub struct IpContext<'a> {
    pub tokens: &'a Tensor,
    pub scales: Tensor,
    pub scaling: IpScaling,
}

impl IpContext<'_> {
    /// What the transformer numbered `index` (execution order) attends to.
    pub fn block(&self, index: usize) -> IpBlock<'_> {
        IpBlock {
            tokens: self.tokens,
            scale: self.scales.get(index as i64),
            scaling: self.scaling,
        }
    }
}

/// The image-prompt side of one transformer: tokens, the weight of each row [B, 1, 1].
pub struct IpBlock<'a> {
    pub tokens: &'a Tensor,
    pub scale: Tensor,
    pub scaling: IpScaling,
}

/// ComfyUI's "C penalty" divides the weight by this width (SDXL's and SD1.5's widest
/// cross-attention), so narrow high-resolution layers get less of the image.
const C_PENALTY_WIDTH: f64 = 1280.0;

/// What the cross-attention layers attend to.
pub struct CrossAttnContext<'a> {
    /// Text encoder states [B, 77, cross_dim].
    pub text: &'a Tensor,
    pub ip: Option<IpContext<'a>>,
}

/// `to_k_ip` / `to_v_ip` weights [hidden, cross_dim] of one cross-attention layer; created
/// as zeros (no effect) until an adapter is loaded into them.
#[derive(Debug)]
pub struct IpWeights {
    pub to_k_ip: Tensor,
    pub to_v_ip: Tensor,
}

impl IpWeights {
    /// Variables under `attn2.processor.to_{k,v}_ip.0.weight`, where diffusers keeps them
    /// once an adapter is loaded.
    fn new(vs: nn::Path, hidden: i64, cross_dim: i64) -> Self {
        let p = vs / "processor";
        let zeros = nn::Init::Const(0.0);
        IpWeights {
            to_k_ip: (&p / "to_k_ip" / 0).var("weight", &[hidden, cross_dim], zeros),
            to_v_ip: (&p / "to_v_ip" / 0).var("weight", &[hidden, cross_dim], zeros),
        }
    }
}

fn linear(vs: nn::Path, din: i64, dout: i64, bias: bool) -> nn::Linear {
    let cfg = nn::LinearConfig {
        bias,
        ..Default::default()
    };
    nn::linear(vs, din, dout, cfg)
}

/// Multi-head attention with fused SDPA (scale 1/sqrt(head_dim), as diffusers'
/// `AttnProcessor2_0` / `IPAdapterAttnProcessor2_0`).
#[derive(Debug)]
pub struct Attention {
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    ip: Option<IpWeights>,
}

impl Attention {
    /// `cross_dim` is `None` for self-attention; `ip` adds the IP-Adapter branch.
    pub fn new(
        vs: nn::Path,
        dim: i64,
        cross_dim: Option<i64>,
        heads: i64,
        qkv_bias: bool,
        ip: bool,
    ) -> Self {
        let kv_dim = cross_dim.unwrap_or(dim);
        Attention {
            to_q: linear(&vs / "to_q", dim, dim, qkv_bias),
            to_k: linear(&vs / "to_k", kv_dim, dim, qkv_bias),
            to_v: linear(&vs / "to_v", kv_dim, dim, qkv_bias),
            to_out: linear(&vs / "to_out" / 0, dim, dim, true),
            heads,
            ip: ip.then(|| IpWeights::new(vs, dim, kv_dim)),
        }
    }

    pub fn ip_weights(&self) -> Option<&IpWeights> {
        self.ip.as_ref()
    }

    /// [B, N, C] -> [B, heads, N, C / heads]
    fn split_heads(&self, xs: &Tensor) -> Tensor {
        let b = xs.size()[0];
        let d = xs.size()[2] / self.heads;
        xs.view([b, -1, self.heads, d]).transpose(1, 2)
    }

    /// [B, heads, N, d] -> [B, N, heads * d]
    fn merge_heads(xs: &Tensor) -> Tensor {
        let (b, h, _, d) = xs.size4().expect("attention output is [B,heads,N,d]");
        xs.transpose(1, 2).reshape([b, -1, h * d])
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let (k, v) = (self.split_heads(k), self.split_heads(v));
        let out = Tensor::scaled_dot_product_attention(
            q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        Self::merge_heads(&out)
    }

    /// `xs` [B, N, dim]; `context` [B, M, cross_dim] for cross-attention, `None` for
    /// self-attention. With `ip`, the output is
    /// `to_out(Attn(q, k(ctx), v(ctx)) + ImageAttn(q, to_k_ip(img), to_v_ip(img)))`, the
    /// image attention weighted per row as `ip.scaling` says ([`Self::image_attention`]).
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>, ip: Option<&IpBlock>) -> Tensor {
        let ctx = context.unwrap_or(xs);
        let q = self.split_heads(&self.to_q.forward(xs));
        let mut out = self.attend(&q, &self.to_k.forward(ctx), &self.to_v.forward(ctx));
        if let (Some(w), Some(ip)) = (&self.ip, ip) {
            let k = ip.tokens.linear(&w.to_k_ip, None::<&Tensor>);
            let v = ip.tokens.linear(&w.to_v_ip, None::<&Tensor>);
            out += self.image_attention(&q, k, v, ip);
        }
        self.to_out.forward(&out)
    }

    /// The image attention with the row weights `w` [B, 1, 1] applied as ComfyUI's
    /// `embeds_scaling` (see [`IpScaling`]); `k`, `v` [B, T, C] before the head split, C
    /// the layer's width.
    fn image_attention(&self, q: &Tensor, k: Tensor, v: Tensor, ip: &IpBlock) -> Tensor {
        let w = &ip.scale;
        let penalized = || w * (k.size()[2] as f64 / C_PENALTY_WIDTH);
        match ip.scaling {
            IpScaling::V => self.attend(q, &k, &v) * w,
            IpScaling::Kv => self.attend(q, &(&k * w), &(v * w)),
            IpScaling::KvC => {
                let wc = penalized();
                self.attend(q, &(&k * &wc), &(v * &wc))
            }
            IpScaling::KMeanVC => {
                let wc = penalized();
                let mean = v.mean_dim(1, true, None::<Kind>);
                self.attend(q, &(&k * &wc), &(v - &mean + mean * &wc))
            }
        }
    }
}

/// GEGLU feed-forward: `net.2(a * gelu(g))` with `[a, g] = net.0.proj(x)`.
#[derive(Debug)]
struct FeedForward {
    proj: nn::Linear,
    out: nn::Linear,
}

impl FeedForward {
    fn new(vs: nn::Path, dim: i64) -> Self {
        let inner = 4 * dim;
        FeedForward {
            proj: linear(&vs / "net" / 0 / "proj", dim, 2 * inner, true),
            out: linear(&vs / "net" / 2, inner, dim, true),
        }
    }
}

impl Module for FeedForward {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = self.proj.forward(xs).chunk(2, -1);
        self.out.forward(&(&h[0] * h[1].gelu("none")))
    }
}

fn layer_norm(vs: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![dim], Default::default())
}

/// Self-attention, cross-attention, feed-forward; pre-LayerNorm (eps 1e-5), residual each.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: nn::LayerNorm,
    attn1: Attention,
    norm2: nn::LayerNorm,
    attn2: Attention,
    norm3: nn::LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(vs: nn::Path, dim: i64, heads: i64, cross_dim: i64, ip: bool) -> Self {
        BasicTransformerBlock {
            norm1: layer_norm(&vs / "norm1", dim),
            attn1: Attention::new(&vs / "attn1", dim, None, heads, false, false),
            norm2: layer_norm(&vs / "norm2", dim),
            attn2: Attention::new(&vs / "attn2", dim, Some(cross_dim), heads, false, ip),
            norm3: layer_norm(&vs / "norm3", dim),
            ff: FeedForward::new(&vs / "ff", dim),
        }
    }

    pub fn cross_attention(&self) -> &Attention {
        &self.attn2
    }

    /// `ip`: this block's share of `ctx.ip` (see [`Transformer2DModel::forward`]).
    pub fn forward(&self, xs: &Tensor, ctx: &CrossAttnContext, ip: Option<&IpBlock>) -> Tensor {
        let xs = self.attn1.forward(&self.norm1.forward(xs), None, None) + xs;
        let xs = self
            .attn2
            .forward(&self.norm2.forward(&xs), Some(ctx.text), ip)
            + xs;
        self.ff.forward(&self.norm3.forward(&xs)) + xs
    }
}

/// `proj_in` is a 1x1 convolution (SD1.x) or a linear layer (`use_linear_projection`).
#[derive(Debug)]
enum Projection {
    Conv(nn::Conv2D),
    Linear(nn::Linear),
}

/// diffusers `Transformer2DModel` on continuous inputs: GroupNorm (eps 1e-6), proj_in,
/// transformer blocks over the H*W tokens, proj_out, plus the input.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: nn::GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
    /// This transformer's number among the UNet's in execution order (down, mid, up):
    /// which row of the per-block IP weights its cross-attention takes.
    index: usize,
}

/// Shape of one `Transformer2DModel`.
#[derive(Clone, Copy, Debug)]
pub struct TransformerConfig {
    pub channels: i64,
    pub heads: i64,
    pub layers: i64,
    pub cross_dim: i64,
    pub groups: i64,
    pub linear_projection: bool,
    pub ip: bool,
    /// Number in execution order (see [`Transformer2DModel`]).
    pub index: usize,
}

impl Transformer2DModel {
    pub fn new(vs: nn::Path, c: TransformerConfig) -> Self {
        let proj = |name: &str| {
            if c.linear_projection {
                Projection::Linear(linear(&vs / name, c.channels, c.channels, true))
            } else {
                Projection::Conv(conv2d(&vs / name, c.channels, c.channels, 1, 1, 0))
            }
        };
        let blocks = (0..c.layers)
            .map(|i| {
                let p = &vs / "transformer_blocks" / i;
                BasicTransformerBlock::new(p, c.channels, c.heads, c.cross_dim, c.ip)
            })
            .collect();
        Transformer2DModel {
            norm: group_norm(&vs / "norm", c.groups, c.channels, 1e-6),
            proj_in: proj("proj_in"),
            blocks,
            proj_out: proj("proj_out"),
            index: c.index,
        }
    }

    pub fn blocks(&self) -> &[BasicTransformerBlock] {
        &self.blocks
    }

    /// The number of this transformer in execution order.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn forward(&self, xs: &Tensor, ctx: &CrossAttnContext) -> Tensor {
        let (b, c, h, w) = xs.size4().expect("Transformer2DModel expects [B,C,H,W]");
        let to_tokens = |t: &Tensor| t.permute([0, 2, 3, 1]).reshape([b, h * w, c]);
        let to_image = |t: &Tensor| t.reshape([b, h, w, c]).permute([0, 3, 1, 2]).contiguous();
        let normed = self.norm.forward(xs);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)),
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)),
        };
        // Every transformer block of this model takes its per-block IP weight (ComfyUI
        // numbers transformers, not their inner blocks).
        let ip = ctx.ip.as_ref().map(|ip| ip.block(self.index));
        for block in &self.blocks {
            tokens = block.forward(&tokens, ctx, ip.as_ref());
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&tokens)),
            Projection::Linear(lin) => to_image(&lin.forward(&tokens)),
        };
        out + xs
    }
}

/// The VAE mid-block attention: GroupNorm, one head over the H*W positions, `to_out.0`,
/// plus the input (`Attention(..., residual_connection=True, _from_deprecated_attn_block)`).
#[derive(Debug)]
pub struct SpatialSelfAttention {
    group_norm: nn::GroupNorm,
    attn: Attention,
}

impl SpatialSelfAttention {
    pub fn new(vs: nn::Path, channels: i64, groups: i64, eps: f64) -> Self {
        SpatialSelfAttention {
            group_norm: group_norm(&vs / "group_norm", groups, channels, eps),
            attn: Attention::new(vs, channels, None, 1, true, false),
        }
    }
}

impl Module for SpatialSelfAttention {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (b, c, h, w) = xs.size4().expect("SpatialSelfAttention expects [B,C,H,W]");
        let tokens = self
            .group_norm
            .forward(xs)
            .view([b, c, h * w])
            .transpose(1, 2);
        let out = self.attn.forward(&tokens, None, None);
        out.transpose(1, 2).reshape([b, c, h, w]) + xs
    }
}
