//! Attention layers: the UNet's transformer blocks, whose cross-attention (`attn2`) can
//! carry the decoupled IP-Adapter branch, and the VAE's single-head spatial self-attention.
use crate::models::attention_probe::{AttentionProbe, Term};
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
    /// A second image-attention term of some rows (`cond_negative`).
    pub extra: Option<ExtraContext<'a>>,
    /// Records attention maps when set (nothing is computed for them otherwise).
    pub probe: Option<&'a AttentionProbe>,
}

/// A second image-attention term, with its own softmax, added to the rows `rows` [S]
/// (int64): their tokens [S, T, cross_dim] and weights [blocks, S, 1, 1] (model's kind).
/// With `nag`, some of the terms are NAG's negative instead ([`Nag`]).
pub struct ExtraContext<'a> {
    pub rows: &'a Tensor,
    pub tokens: &'a Tensor,
    pub scales: Tensor,
    pub nag: Option<&'a Nag>,
}

impl IpContext<'_> {
    /// What the transformer numbered `index` (execution order), over a `grid` of h x w
    /// tokens, attends to.
    pub fn block(&self, index: usize, grid: (i64, i64)) -> IpBlock<'_> {
        IpBlock {
            probe: self.probe.map(|probe| BlockProbe { probe, index, grid }),
            tokens: self.tokens,
            scale: self.scales.get(index as i64),
            scaling: self.scaling,
            extra: self.extra.as_ref().map(|x| ExtraBlock {
                rows: x.rows,
                tokens: x.tokens,
                scale: x.scales.get(index as i64),
                nag: x.nag,
            }),
        }
    }
}

/// The image-prompt side of one transformer: tokens, the weight of each row [B, 1, 1].
pub struct IpBlock<'a> {
    pub tokens: &'a Tensor,
    pub scale: Tensor,
    pub scaling: IpScaling,
    pub extra: Option<ExtraBlock<'a>>,
    pub probe: Option<BlockProbe<'a>>,
}

/// Where one transformer records its attention maps: its number and grid (h, w).
pub struct BlockProbe<'a> {
    pub probe: &'a AttentionProbe,
    pub index: usize,
    pub grid: (i64, i64),
}

/// One transformer's share of an [`ExtraContext`]: weights [S, 1, 1].
pub struct ExtraBlock<'a> {
    pub rows: &'a Tensor,
    pub tokens: &'a Tensor,
    pub scale: Tensor,
    pub nag: Option<&'a Nag>,
}

/// Normalized Attention Guidance (Chen et al. 2025, arXiv 2505.21179) on the rows of an
/// extra term marked `on`: there the term is not added; it makes the row's negative
/// output `z⁻ = text attention + term` (the row's own text, the term's image tokens in
/// place of the row's), and the row's output `z⁺` becomes
/// `α·z̃·min(r, τ)/r + (1 − α)·z⁺` with `z̃ = s·z⁺ − (s − 1)·z⁻` and `r = ‖z̃‖₁ / ‖z⁺‖₁`
/// per token (norms floored at 1e-6), before the output projection: the arithmetic of
/// ComfyUI's `nodes_nag.py` and ChenDarYen/ComfyUI-NAG's `utils.nag`. Where the term's
/// weight is 0 (its window or block weights), the row is left as `z⁺`.
pub struct Nag {
    /// [S, 1, 1] bool: NAG's negative, or an added term.
    pub on: Tensor,
    /// `s`, `τ`, `α` of each row [S, 1, 1] (model's kind).
    pub scale: Tensor,
    pub tau: Tensor,
    pub alpha: Tensor,
}

impl Nag {
    /// The extra term's rows after it: `z_pos` [S, N, C] their output without it, `text`
    /// their text attention, `term` the term, `weight` its weights [S, 1, 1].
    fn apply(&self, z_pos: &Tensor, text: &Tensor, term: &Tensor, weight: &Tensor) -> Tensor {
        let z_neg = text + term;
        let guided = z_pos * &self.scale - z_neg * (&self.scale - 1.0);
        let l1 = |z: &Tensor| {
            z.norm_scalaropt_dim(1.0, [-1i64].as_slice(), true)
                .clamp_min(1e-6)
        };
        let ratio = l1(&guided) / l1(z_pos);
        let capped = guided * ratio.minimum(&self.tau) / ratio;
        let nag: Tensor = capped * &self.alpha + z_pos * (1.0 - &self.alpha);
        let active = self.on.logical_and(&weight.ne(0.0));
        nag.where_self(&active, &(z_pos + term))
    }
}

/// ComfyUI's "C penalty" divides the weight by this width (SDXL's and SD1.5's widest
/// cross-attention), so narrow high-resolution layers get less of the image.
const C_PENALTY_WIDTH: f64 = 1280.0;

/// What the cross-attention layers attend to.
pub struct CrossAttnContext<'a> {
    /// Text encoder states [B, 77, cross_dim].
    pub text: &'a Tensor,
    pub ip: Option<IpContext<'a>>,
    /// NegToMe's token merge, applied by the transformers that are at least its
    /// `min_size` (the UNet sets it for the up blocks only).
    pub negtome: Option<TokenMerge>,
}

/// NegToMe (Singh et al. 2024): after an attention's output projection, each token x of a
/// merged row whose best match `r* = argmax_r cos(x, r)` among the tokens of its reference
/// row has `cos(x, r*) > threshold` becomes `(1 + alpha) x - alpha r*`.
pub struct TokenMerge {
    /// The merged rows [M] (int64) and the reference row of each [M].
    pub rows: Tensor,
    pub refs: Tensor,
    /// Per merged row: [M, 1] in float32 (the cosines are computed in float32), and
    /// [M, 1, 1] in the model's kind.
    pub threshold: Tensor,
    pub alpha: Tensor,
    /// Transformers whose input is smaller than this along either side do not merge.
    pub min_size: i64,
}

/// `x / max(|x|, 1e-12)` along the last dimension (`torch.nn.functional.normalize`).
fn unit(x: &Tensor) -> Tensor {
    x / x
        .norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
        .clamp_min(1e-12)
}

impl TokenMerge {
    /// Whether a transformer over `h` x `w` tokens merges.
    pub fn applies(&self, h: i64, w: i64) -> bool {
        h >= self.min_size && w >= self.min_size
    }

    /// `xs` [B, N, C] (an attention output) with the merged rows replaced.
    pub fn apply(&self, xs: &Tensor) -> Tensor {
        self.apply_with_mask(xs).0
    }

    /// [`Self::apply`], and which tokens of the merged rows merged: `[M, N]` (bool).
    pub fn apply_with_mask(&self, xs: &Tensor) -> (Tensor, Tensor) {
        let x = xs.index_select(0, &self.rows);
        let r = xs.index_select(0, &self.refs);
        // In float32: fp16's smallest normal (6e-5) would not keep 1e-12 off zero.
        let f32 = |t: &Tensor| unit(&t.to_kind(tch::Kind::Float));
        let cos = f32(&x).matmul(&f32(&r).transpose(1, 2));
        let (best, idx) = cos.max_dim(-1, false);
        let r_star = r.gather(1, &idx.unsqueeze(-1).expand_as(&x), false);
        let merged = &x + (&x - r_star) * &self.alpha;
        let mask = best.gt_tensor(&self.threshold);
        let out = xs.index_copy(0, &self.rows, &merged.where_self(&mask.unsqueeze(-1), &x));
        (out, mask)
    }
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
        // NAG's negative output takes the text attention alone (`out` grows in place).
        let nag_text = ip.and_then(|ip| ip.extra.as_ref()?.nag).map(|_| out.copy());
        if let (Some(w), Some(ip)) = (&self.ip, ip) {
            let project = |tokens: &Tensor| {
                let k = tokens.linear(&w.to_k_ip, None::<&Tensor>);
                (k, tokens.linear(&w.to_v_ip, None::<&Tensor>))
            };
            let (k, v) = project(ip.tokens);
            let probs = ip.probe.as_ref().map(|_| {
                let image = self.probabilities(&q, &image_keys(&k, &ip.scale, ip.scaling));
                (image, self.probabilities(&q, &self.to_k.forward(ctx)))
            });
            let term = self.image_attention(&q, k, v, &ip.scale, ip.scaling);
            if let (Some(p), Some((probs, text))) = (&ip.probe, &probs) {
                let ip_term = Term { term: &term, probs };
                p.probe.record(p.index, p.grid, ip_term, text);
            }
            out += term;
            if let Some(x) = &ip.extra {
                let (k, v) = project(x.tokens);
                let q = q.index_select(0, x.rows);
                let probs = ip
                    .probe
                    .as_ref()
                    .map(|_| self.probabilities(&q, &image_keys(&k, &x.scale, ip.scaling)));
                let term = self.image_attention(&q, k, v, &x.scale, ip.scaling);
                if let (Some(p), Some(probs)) = (&ip.probe, &probs) {
                    let extra = Term { term: &term, probs };
                    p.probe.record_extra(p.index, p.grid, x.rows, extra);
                }
                out = match (x.nag, &nag_text) {
                    (Some(nag), Some(text)) => {
                        let (z, t) = (out.index_select(0, x.rows), text.index_select(0, x.rows));
                        out.index_copy(0, x.rows, &nag.apply(&z, &t, &term, &x.scale))
                    }
                    _ => out.index_add(0, x.rows, &term),
                };
            }
        }
        self.to_out.forward(&out)
    }

    /// `softmax(q kᵀ / sqrt(d))` [B, heads, N, T] in float32 (what the fused attention
    /// computes and does not return); `k` [B, T, C] before the head split.
    fn probabilities(&self, q: &Tensor, k: &Tensor) -> Tensor {
        let k = self.split_heads(k).to_kind(Kind::Float);
        let d = k.size()[3] as f64;
        let scores = q.to_kind(Kind::Float).matmul(&k.transpose(2, 3)) / d.sqrt();
        scores.softmax(-1, Kind::Float)
    }

    /// The image attention with the row weights `w` [B, 1, 1] applied as ComfyUI's
    /// `embeds_scaling` (see [`IpScaling`]); `k`, `v` [B, T, C] before the head split, C
    /// the layer's width.
    fn image_attention(
        &self,
        q: &Tensor,
        k: Tensor,
        v: Tensor,
        w: &Tensor,
        scaling: IpScaling,
    ) -> Tensor {
        let keys = image_keys(&k, w, scaling);
        match scaling {
            IpScaling::V => self.attend(q, &keys, &v) * w,
            IpScaling::Kv => self.attend(q, &keys, &(v * w)),
            IpScaling::KvC => self.attend(q, &keys, &(v * penalized(w, &k))),
            IpScaling::KMeanVC => {
                let mean = v.mean_dim(1, true, None::<Kind>);
                let wc = penalized(w, &k);
                self.attend(q, &keys, &(v - &mean + mean * wc))
            }
        }
    }
}

/// The weight with ComfyUI's C penalty for image keys `k` [B, T, C].
fn penalized(w: &Tensor, k: &Tensor) -> Tensor {
    w * (k.size()[2] as f64 / C_PENALTY_WIDTH)
}

/// The image keys `k` [B, T, C] as the image attention takes them: weighted by `w` for
/// every scaling but "V only".
fn image_keys(k: &Tensor, w: &Tensor, scaling: IpScaling) -> Tensor {
    match scaling {
        IpScaling::V => k.shallow_clone(),
        IpScaling::Kv => k * w,
        IpScaling::KvC | IpScaling::KMeanVC => k * penalized(w, k),
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

    /// `ip`: this block's share of `ctx.ip` (see [`Transformer2DModel::forward`]); `merge`:
    /// NegToMe on both attention outputs, before their residual adds (where the reference
    /// code's attention processor applies it).
    pub fn forward(
        &self,
        xs: &Tensor,
        ctx: &CrossAttnContext,
        ip: Option<&IpBlock>,
        merge: Option<&TokenMerge>,
    ) -> Tensor {
        let merged = |out: Tensor| match (merge, ip.and_then(|ip| ip.probe.as_ref())) {
            (Some(m), Some(p)) => {
                let (out, mask) = m.apply_with_mask(&out);
                p.probe.record_merge(p.index, p.grid, &m.rows, &mask);
                out
            }
            (Some(m), None) => m.apply(&out),
            (None, _) => out,
        };
        let xs = merged(self.attn1.forward(&self.norm1.forward(xs), None, None)) + xs;
        let attn2 = self
            .attn2
            .forward(&self.norm2.forward(&xs), Some(ctx.text), ip);
        let xs = merged(attn2) + xs;
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
        let ip = ctx.ip.as_ref().map(|ip| ip.block(self.index, (h, w)));
        let merge = ctx.negtome.as_ref().filter(|m| m.applies(h, w));
        for block in &self.blocks {
            tokens = block.forward(&tokens, ctx, ip.as_ref(), merge);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(threshold: f64) -> TokenMerge {
        TokenMerge {
            rows: Tensor::from_slice(&[0i64]),
            refs: Tensor::from_slice(&[1i64]),
            threshold: Tensor::from_slice(&[threshold as f32]).view([1, 1]),
            alpha: Tensor::from_slice(&[0.5f32]).view([1, 1, 1]),
            min_size: 32,
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn nag_extrapolates_caps_the_l1_ratio_blends_and_leaves_other_rows() {
        // Three rows of one token: z+ = (1, 2), text = (1, 1), term = (0, 2): z- = (1, 3).
        let z = Tensor::from_slice(&[1.0f32, 2.0])
            .view([1, 1, 2])
            .repeat([3, 1, 1]);
        let text = Tensor::from_slice(&[1.0f32, 1.0])
            .view([1, 1, 2])
            .repeat([3, 1, 1]);
        // Row 1's term has weight 0 (its window): it is 0, and NAG is off there.
        let term = Tensor::from_slice(&[0.0f32, 2.0, 0.0, 0.0, 0.0, 2.0]).view([3, 1, 2]);
        let col = |v: [f32; 3]| Tensor::from_slice(&v).view([3, 1, 1]);
        let nag = |tau: f32, alpha: f32| Nag {
            on: Tensor::from_slice(&[true, true, false]).view([3, 1, 1]),
            scale: col([3.0; 3]),
            tau: col([tau; 3]),
            alpha: col([alpha; 3]),
        };
        // Row 2 is an added term (cond_negative's).
        let weight = col([1.0, 0.0, 1.0]);
        // 3 z+ - 2 z- = (1, 0): L1 ratio 1/3, under any cap; alpha 1 takes it whole.
        let out = values(&nag(10.0, 1.0).apply(&z, &text, &term, &weight));
        assert_eq!(out, [1.0, 0.0, 1.0, 2.0, 1.0, 4.0]);
        // Capped at 0.25 of |z+| = 3: (1, 0) * 0.75; blended half with z+.
        let out = values(&nag(0.25, 0.5).apply(&z, &text, &term, &weight));
        let want = [0.875f32, 1.0, 1.0, 2.0, 1.0, 4.0];
        assert!(
            out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{out:?}"
        );
    }

    #[test]
    fn each_token_merges_with_its_best_reference_token_above_the_threshold() {
        // Row 0 (merged): x0 = (2, 0), x1 = (0, 3); row 1 (reference): r0 = (0, 1),
        // r1 = (1, 0.1). x0's best match is r1 (cos 0.995), x1's is r0 (cos 1).
        let xs = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 3.0, 0.0, 1.0, 1.0, 0.1]).view([2, 2, 2]);
        let values = |t: Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        // (1 + 0.5) x - 0.5 r*: x0 -> (2.5, -0.05), x1 -> (0, 4); the reference row is kept.
        let both = values(merge(0.99).apply(&xs));
        let want = [2.5, -0.05, 0.0, 4.0, 0.0, 1.0, 1.0, 0.1];
        assert!(
            both.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{both:?}"
        );
        // Above x0's 0.995: only x1 merges.
        let one = values(merge(0.999).apply(&xs));
        let want = [2.0, 0.0, 0.0, 4.0, 0.0, 1.0, 1.0, 0.1];
        assert!(
            one.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{one:?}"
        );
        assert!(merge(0.0).applies(32, 40) && !merge(0.0).applies(16, 64));
    }
}
