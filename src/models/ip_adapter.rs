//! IP-Adapter weight files (h94/IP-Adapter flat safetensors: `image_proj.*`, `ip_adapter.*`)
//! and their image projections: the base adapter's `ImageProjection` (CLIP `image_embeds` ->
//! 4 tokens) and IP-Adapter Plus' `Resampler` (CLIP `hidden_states[-2]` -> 16 tokens), as
//! diffusers' `ImageProjection` / `IPAdapterPlusImageProjection` compute them.
use super::clip_text::layer_norm;
use super::clip_vision::{ClipVisionModelWithProjection, VisionOutput};
use super::preprocess::clip_pixels;
pub use crate::params::{AdapterKind, NoImage};
use crate::weights::{self, TensorFile, TensorSource};
use anyhow::{Context, Result, bail};
use std::path::Path;
use tch::{Device, Kind, Tensor, nn, nn::Module};

/// Head width of the Resampler's attention (IP-Adapter's and diffusers' fixed value).
pub const RESAMPLER_DIM_HEAD: i64 = 64;
/// Image tokens of the Plus adapter for SD1.5.
pub const PLUS_TOKENS: i64 = 16;
/// Image tokens of the base adapter.
pub const BASE_TOKENS: i64 = 4;

/// Shapes of a Resampler, read from its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResamplerConfig {
    /// Width of the image-encoder states it reads (1280 for ViT-H).
    pub embed_dim: i64,
    /// Width of the latents (768 for SD1.5).
    pub hidden_dim: i64,
    /// Output width = UNet cross-attention width.
    pub output_dim: i64,
    pub depth: i64,
    pub heads: i64,
    pub dim_head: i64,
    pub num_queries: i64,
    pub ff_inner: i64,
}

impl ResamplerConfig {
    /// IP-Adapter's Resampler for a given embedding and cross-attention width: latents as wide
    /// as the cross-attention (when that is a multiple of 64, else 64), 64-wide heads, depth 4,
    /// 16 queries, feed-forward x4.
    pub fn standard(embed_dim: i64, cross_dim: i64) -> Self {
        let hidden_dim = if cross_dim % RESAMPLER_DIM_HEAD == 0 {
            cross_dim
        } else {
            RESAMPLER_DIM_HEAD
        };
        ResamplerConfig {
            embed_dim,
            hidden_dim,
            output_dim: cross_dim,
            depth: 4,
            heads: hidden_dim / RESAMPLER_DIM_HEAD,
            dim_head: RESAMPLER_DIM_HEAD,
            num_queries: PLUS_TOKENS,
            ff_inner: 4 * hidden_dim,
        }
    }
}

/// An opened IP-Adapter `.safetensors` file: its kind and shapes, and its tensors (the UNet
/// loads the `ip_adapter.*` ones through [`TensorSource`]).
pub struct AdapterFile {
    file: TensorFile,
    pub kind: AdapterKind,
    /// Image tokens the projection produces.
    pub num_tokens: i64,
    /// Width of the tokens = the UNet's cross-attention width.
    pub cross_dim: i64,
    /// Width of the image-encoder output it reads: `projection_dim` (base) or `hidden_size` (Plus).
    pub embed_dim: i64,
    /// Number of `ip_adapter.{k}.to_k_ip` layers.
    pub num_ip_layers: usize,
    pub resampler: Option<ResamplerConfig>,
}

fn dims(file: &TensorFile, key: &str) -> Result<Vec<i64>> {
    file.shape(key)
        .map(|s| s.iter().map(|&d| d as i64).collect())
        .with_context(|| {
            format!(
                "{}: tensor {key:?} is missing; is this an IP-Adapter file?",
                file.path().display()
            )
        })
}

impl AdapterFile {
    pub fn open(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "bin" | "pt" | "pth" | "ckpt") {
            bail!(
                "{}: pickled IP-Adapter files are not read; download the .safetensors release \
                 (h94/IP-Adapter models/ip-adapter_sd15.safetensors, ip-adapter-plus_sd15.safetensors) \
                 or convert it with: python -c \"import sys, torch; from safetensors.torch import save_file; \
                 sd = torch.load(sys.argv[1], map_location='cpu'); save_file({{f'{{k}}.{{n}}': t.contiguous() \
                 for k in sd for n, t in sd[k].items()}}, sys.argv[2])\" {} OUT.safetensors",
                path.display(),
                path.display()
            );
        }
        let file = TensorFile::open(path)?;
        let names = file.names();
        let num_ip_layers = names
            .iter()
            .filter(|n| n.starts_with("ip_adapter.") && n.ends_with(".to_k_ip.weight"))
            .count();
        if num_ip_layers == 0 {
            bail!(
                "{}: no ip_adapter.*.to_k_ip.weight tensors; is this an IP-Adapter file?",
                path.display()
            );
        }
        let (kind, num_tokens, cross_dim, embed_dim, resampler) = if file
            .contains("image_proj.latents")
        {
            let latents = dims(&file, "image_proj.latents")?;
            let proj_in = dims(&file, "image_proj.proj_in.weight")?;
            let proj_out = dims(&file, "image_proj.proj_out.weight")?;
            let to_q = dims(&file, "image_proj.layers.0.0.to_q.weight")?;
            let ff = dims(&file, "image_proj.layers.0.1.1.weight")?;
            let depth = names
                .iter()
                .filter(|n| n.starts_with("image_proj.layers.") && n.ends_with(".0.to_q.weight"))
                .count();
            if latents.len() != 3 || to_q[0] % RESAMPLER_DIM_HEAD != 0 {
                bail!(
                    "{}: unexpected Resampler shapes (latents {latents:?}, to_q {to_q:?}; heads are {RESAMPLER_DIM_HEAD} wide)",
                    path.display()
                );
            }
            let cfg = ResamplerConfig {
                embed_dim: proj_in[1],
                hidden_dim: latents[2],
                output_dim: proj_out[0],
                depth: depth as i64,
                heads: to_q[0] / RESAMPLER_DIM_HEAD,
                dim_head: RESAMPLER_DIM_HEAD,
                num_queries: latents[1],
                ff_inner: ff[0],
            };
            (
                AdapterKind::Plus,
                cfg.num_queries,
                cfg.output_dim,
                cfg.embed_dim,
                Some(cfg),
            )
        } else if file.contains("image_proj.proj.weight") {
            let proj = dims(&file, "image_proj.proj.weight")?;
            let cross = dims(&file, "image_proj.norm.weight")?[0];
            if proj[0] % cross != 0 {
                bail!(
                    "{}: image_proj.proj.weight {proj:?} is not a multiple of the norm width {cross}",
                    path.display()
                );
            }
            (AdapterKind::Base, proj[0] / cross, cross, proj[1], None)
        } else {
            bail!(
                "{}: unknown image projection (neither image_proj.proj.weight nor image_proj.latents); \
                 negimg reads ip-adapter_sd15 and ip-adapter-plus_sd15",
                path.display()
            );
        };
        let to_k = dims(&file, "ip_adapter.1.to_k_ip.weight")?;
        if to_k[1] != cross_dim {
            bail!(
                "{}: ip_adapter.1.to_k_ip.weight is {to_k:?} but the image tokens are {cross_dim} wide",
                path.display()
            );
        }
        Ok(AdapterFile {
            file,
            kind,
            num_tokens,
            cross_dim,
            embed_dim,
            num_ip_layers,
            resampler,
        })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn tensors(&self) -> &TensorFile {
        &self.file
    }
}

impl TensorSource for AdapterFile {
    fn origin(&self) -> &Path {
        self.file.origin()
    }
    fn names(&self) -> Vec<String> {
        self.file.names()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.file.shape(name)
    }
    fn get(&self, name: &str, device: Device, kind: Kind) -> Result<Tensor> {
        self.file.get(name, device, kind)
    }
}

/// Base adapter: `LayerNorm(reshape(proj(image_embeds), [B, tokens, cross]))`.
pub struct ImageProjection {
    proj: nn::Linear,
    norm: nn::LayerNorm,
    tokens: i64,
    cross_dim: i64,
    embed_dim: i64,
}

impl ImageProjection {
    /// `vs` is the `image_proj` path.
    pub fn new(vs: nn::Path, embed_dim: i64, cross_dim: i64, tokens: i64) -> Self {
        ImageProjection {
            proj: nn::linear(
                &vs / "proj",
                embed_dim,
                tokens * cross_dim,
                Default::default(),
            ),
            norm: layer_norm(&vs / "norm", cross_dim, 1e-5),
            tokens,
            cross_dim,
            embed_dim,
        }
    }

    /// `[B, embed]` -> `[B, tokens, cross]`.
    pub fn forward(&self, image_embeds: &Tensor) -> Tensor {
        let b = image_embeds.size()[0];
        self.norm.forward(&self.proj.forward(image_embeds).reshape([
            b,
            self.tokens,
            self.cross_dim,
        ]))
    }
}

/// Perceiver attention of the Resampler (`layers.i.0`): latents attend to the image states
/// and to themselves.
struct PerceiverAttention {
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    to_q: nn::Linear,
    to_kv: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    dim_head: i64,
}

impl PerceiverAttention {
    fn new(vs: nn::Path, c: &ResamplerConfig) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        let inner = c.heads * c.dim_head;
        PerceiverAttention {
            norm1: layer_norm(&vs / "norm1", c.hidden_dim, 1e-5),
            norm2: layer_norm(&vs / "norm2", c.hidden_dim, 1e-5),
            to_q: nn::linear(&vs / "to_q", c.hidden_dim, inner, no_bias),
            to_kv: nn::linear(&vs / "to_kv", c.hidden_dim, 2 * inner, no_bias),
            to_out: nn::linear(&vs / "to_out", inner, c.hidden_dim, no_bias),
            heads: c.heads,
            dim_head: c.dim_head,
        }
    }

    fn forward(&self, x: &Tensor, latents: &Tensor) -> Tensor {
        let x = self.norm1.forward(x);
        let latents = self.norm2.forward(latents);
        let (b, q_len) = (latents.size()[0], latents.size()[1]);
        let heads = |t: Tensor| {
            let n = t.size()[1];
            t.view([b, n, self.heads, self.dim_head]).transpose(1, 2)
        };
        let q = heads(self.to_q.forward(&latents));
        let kv = self
            .to_kv
            .forward(&Tensor::cat(&[&x, &latents], 1))
            .chunk(2, -1);
        let (k, v) = (heads(kv[0].shallow_clone()), heads(kv[1].shallow_clone()));
        // softmax(q k^T / sqrt(dim_head)) v (IP-Adapter scales q and k by dim_head^-1/4 each).
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.to_out.forward(
            &y.transpose(1, 2)
                .reshape([b, q_len, self.heads * self.dim_head]),
        )
    }
}

/// `layers.i.1`: LayerNorm, Linear, GELU, Linear (no biases).
struct FeedForward {
    norm: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl FeedForward {
    fn new(vs: nn::Path, c: &ResamplerConfig) -> Self {
        let no_bias = nn::LinearConfig {
            bias: false,
            ..Default::default()
        };
        FeedForward {
            norm: layer_norm(&vs / 0, c.hidden_dim, 1e-5),
            fc1: nn::linear(&vs / 1, c.hidden_dim, c.ff_inner, no_bias),
            fc2: nn::linear(&vs / 3, c.ff_inner, c.hidden_dim, no_bias),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2
            .forward(&self.fc1.forward(&self.norm.forward(x)).gelu("none"))
    }
}

/// IP-Adapter Plus' Resampler (diffusers' `IPAdapterPlusImageProjection`).
pub struct Resampler {
    latents: Tensor,
    proj_in: nn::Linear,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    proj_out: nn::Linear,
    norm_out: nn::LayerNorm,
}

impl Resampler {
    /// `vs` is the `image_proj` path.
    pub fn new(vs: nn::Path, c: &ResamplerConfig) -> Self {
        let layers = (0..c.depth)
            .map(|i| {
                (
                    PerceiverAttention::new(&vs / "layers" / i / 0, c),
                    FeedForward::new(&vs / "layers" / i / 1, c),
                )
            })
            .collect();
        Resampler {
            latents: vs.randn(
                "latents",
                &[1, c.num_queries, c.hidden_dim],
                0.0,
                1.0 / (c.hidden_dim as f64).sqrt(),
            ),
            proj_in: nn::linear(
                &vs / "proj_in",
                c.embed_dim,
                c.hidden_dim,
                Default::default(),
            ),
            layers,
            proj_out: nn::linear(
                &vs / "proj_out",
                c.hidden_dim,
                c.output_dim,
                Default::default(),
            ),
            norm_out: layer_norm(&vs / "norm_out", c.output_dim, 1e-5),
        }
    }

    /// Image-encoder states `[B, N, embed]` -> `[B, queries, output]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let x = self.proj_in.forward(x);
        let mut latents = self.latents.repeat([b, 1, 1]);
        for (attn, ff) in &self.layers {
            latents = attn.forward(&x, &latents) + latents;
            latents = ff.forward(&latents) + &latents;
        }
        self.norm_out.forward(&self.proj_out.forward(&latents))
    }
}

enum Projection {
    Base(ImageProjection),
    Plus(Resampler),
}

/// The image projection of an adapter file, with the device and dtype it runs in (for the
/// "no image" inputs it makes itself).
pub struct ImageProj {
    net: Projection,
    device: Device,
    kind: Kind,
}

impl ImageProj {
    /// The `image_proj.*` weights of `file` on `device` in `kind`.
    pub fn load(file: &AdapterFile, device: Device, kind: Kind) -> Result<ImageProj> {
        let net =
            weights::build_and_load(file.tensors(), device, kind, weights::same_name, |vs| {
                let root = vs / "image_proj";
                Ok(match &file.resampler {
                    Some(cfg) => Projection::Plus(Resampler::new(root, cfg)),
                    None => Projection::Base(ImageProjection::new(
                        root,
                        file.embed_dim,
                        file.cross_dim,
                        file.num_tokens,
                    )),
                })
            })?;
        Ok(ImageProj { net, device, kind })
    }

    pub fn adapter_kind(&self) -> AdapterKind {
        match self.net {
            Projection::Base(_) => AdapterKind::Base,
            Projection::Plus(_) => AdapterKind::Plus,
        }
    }

    /// Image tokens `[B, T, cross]`: base from `image_embeds`, Plus from `hidden_states[-2]`.
    pub fn tokens(&self, vision: &VisionOutput) -> Tensor {
        self.project(&self.features(vision))
    }

    /// What the projection reads from the encoder: `image_embeds` `[B, embed]` (base) or
    /// `hidden_states[-2]` `[B, positions, hidden]` (Plus), in the adapter's kind.
    pub fn features(&self, vision: &VisionOutput) -> Tensor {
        match &self.net {
            Projection::Base(_) => vision.image_embeds.to_kind(self.kind),
            Projection::Plus(_) => vision.penultimate.to_kind(self.kind),
        }
    }

    /// Tokens `[B, T, cross]` of [`features`](Self::features).
    pub fn project(&self, features: &Tensor) -> Tensor {
        match &self.net {
            Projection::Base(p) => p.forward(features),
            Projection::Plus(r) => r.forward(features),
        }
    }

    /// Tokens `[1, T, cross]` for a branch without an image.
    pub fn no_image_tokens(
        &self,
        encoder: &ClipVisionModelWithProjection,
        mode: NoImage,
    ) -> Tensor {
        self.project(&self.no_image_features(encoder, mode))
    }

    /// [`features`](Self::features) `[1, ...]` of "no image".
    /// `Reference` (IP-Adapter's): base = an all-zero `image_embeds`; Plus = the encoder
    /// states of an all-zero *normalized* pixel tensor.
    /// `Black` (ComfyUI's): the features of an all-black image.
    pub fn no_image_features(
        &self,
        encoder: &ClipVisionModelWithProjection,
        mode: NoImage,
    ) -> Tensor {
        let size = encoder.image_size();
        match (mode, &self.net) {
            (NoImage::Reference, Projection::Base(p)) => {
                Tensor::zeros([1, p.embed_dim], (self.kind, self.device))
            }
            (NoImage::Reference, Projection::Plus(_)) => {
                let pixels =
                    Tensor::zeros([1, 3, size as i64, size as i64], (self.kind, self.device));
                self.features(&encoder.forward(&pixels))
            }
            (NoImage::Black, _) => {
                let black = image::RgbImage::new(size as u32, size as u32);
                self.features(&encoder.forward(&clip_pixels(&black, size, self.device, self.kind)))
            }
        }
    }
}

/// Writes a random IP-Adapter file of `kind` (flat `image_proj.*` + `ip_adapter.*` keys, fp32).
/// `embed_dim` is the image encoder's `projection_dim` (base) or `hidden_size` (Plus);
/// `attn_hidden_sizes` are the UNet cross-attention widths in `ip_adapter` key order
/// (k = 1, 3, 5, ...). Plus uses [`ResamplerConfig::standard`].
pub fn write_random(
    path: &Path,
    kind: AdapterKind,
    cross_dim: i64,
    embed_dim: i64,
    attn_hidden_sizes: &[i64],
    seed: i64,
) -> Result<()> {
    let vs = weights::random::seeded_var_store(seed);
    let root = vs.root();
    match kind {
        AdapterKind::Base => {
            ImageProjection::new(&root / "image_proj", embed_dim, cross_dim, BASE_TOKENS);
        }
        AdapterKind::Plus => {
            Resampler::new(
                &root / "image_proj",
                &ResamplerConfig::standard(embed_dim, cross_dim),
            );
        }
    }
    let no_bias = nn::LinearConfig {
        bias: false,
        ..Default::default()
    };
    for (i, &hidden) in attn_hidden_sizes.iter().enumerate() {
        let layer = &root / "ip_adapter" / (2 * i + 1);
        nn::linear(&layer / "to_k_ip", cross_dim, hidden, no_bias);
        nn::linear(&layer / "to_v_ip", cross_dim, hidden, no_bias);
    }
    weights::random::randomize(&vs, seed, 0.02);
    weights::random::save_var_store(&vs, path, Kind::Float)
}
