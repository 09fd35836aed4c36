//! IP-Adapter weight files (h94/IP-Adapter flat safetensors: `image_proj.*`, `ip_adapter.*`)
//! and their image projections, one per [`Family`]: the base adapter's `ImageProjection`
//! (CLIP `image_embeds` -> 4 tokens), IP-Adapter Plus' `Resampler` (CLIP `hidden_states[-2]`
//! -> 16 tokens) and the full-face adapter's MLP (`hidden_states[-2]` -> one token per
//! position), as diffusers' `ImageProjection` / `IPAdapterPlusImageProjection` /
//! `IPAdapterFullImageProjection` compute them. Widths (SD1.5's 768, SDXL's 2048; ViT-H's or
//! ViT-bigG's image features) are read from the file's shapes.
use super::clip_text::{layer_norm, multi_head_attention};
use super::clip_vision::{ClipVisionConfig, ClipVisionModelWithProjection, VisionOutput};
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

/// The image projection of an adapter file, told from its `image_proj.*` keys. Kinds of one
/// family have files of identical shapes (base and light; plus and plus_face): among them
/// the kind given by name is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `image_proj.proj` + `image_proj.norm`: a linear map of `image_embeds` to N tokens.
    Linear,
    /// `image_proj.latents`, `layers.*`: the Resampler over `hidden_states[-2]`.
    Resampler,
    /// `image_proj.proj.0`, `.2`, `.3`: Linear, GELU, Linear, LayerNorm over every position
    /// of `hidden_states[-2]`.
    Mlp,
}

impl Family {
    pub fn of(kind: AdapterKind) -> Family {
        match kind {
            AdapterKind::Base | AdapterKind::Light => Family::Linear,
            AdapterKind::Plus | AdapterKind::PlusFace => Family::Resampler,
            AdapterKind::FullFace => Family::Mlp,
        }
    }

    /// What the file's keys show, for messages.
    fn describe(self) -> String {
        let kinds: Vec<String> = AdapterKind::ALL
            .into_iter()
            .filter(|&k| Family::of(k) == self)
            .map(|k| k.to_string())
            .collect();
        let what = match self {
            Family::Linear => {
                "a linear projection of image_embeds (image_proj.proj, image_proj.norm)"
            }
            Family::Resampler => "a Resampler over hidden states (image_proj.latents)",
            Family::Mlp => "an MLP over hidden states (image_proj.proj.0/2/3)",
        };
        format!("{what}: adapter = {}", kinds.join(" or "))
    }

    /// Whether the projection reads the encoder's `hidden_states[-2]` (else `image_embeds`).
    pub fn reads_hidden_states(self) -> bool {
        self != Family::Linear
    }
}

/// The width of the image features `kind` reads from an encoder of `vision`'s shape:
/// `projection_dim` (image_embeds) or `hidden_size` (hidden states).
pub fn embed_dim_for(kind: AdapterKind, vision: &ClipVisionConfig) -> i64 {
    if Family::of(kind).reads_hidden_states() {
        vision.hidden_size
    } else {
        vision.projection_dim
    }
}

/// Image tokens of `kind` on an encoder with `positions` positions (257 for ViT-H at 224):
/// 4 (base, light), 16 (Plus' Resampler), one per position (full face). For estimates;
/// a file's own count is [`AdapterFile::num_tokens`].
pub fn typical_tokens(kind: AdapterKind, positions: i64) -> i64 {
    match Family::of(kind) {
        Family::Linear => BASE_TOKENS,
        Family::Resampler => PLUS_TOKENS,
        Family::Mlp => positions,
    }
}

/// Opens each adapter of `adapters` as its kind and checks that the image encoder folder
/// `encoder` gives the features it reads, from the files' headers and the encoder's
/// config.json (no weights load): what `negimg plan` and the pipeline check first.
/// Files not on disk yet (to be downloaded or made by `init_random`) are skipped.
pub fn check_adapters<'a>(
    adapters: impl IntoIterator<Item = (AdapterKind, &'a Path)>,
    encoder: &Path,
) -> Result<()> {
    let config = encoder.join("config.json");
    if !config.is_file() {
        return Ok(());
    }
    let cfg = ClipVisionConfig::from_file(&config)?;
    for (kind, path) in adapters {
        if path.is_file() {
            AdapterFile::open_as(path, kind)?.check_encoder(&cfg, encoder)?;
        }
    }
    Ok(())
}

/// Each adapter of `adapters` on disk must make tokens as wide as the UNet's cross-attention
/// (`cross`, from the UNet config that `unet` names): an SDXL adapter (2048) on an SD1.5 UNet
/// (768), or the reverse, is refused naming both, before any weights load.
pub fn check_cross_dim<'a>(
    adapters: impl IntoIterator<Item = (AdapterKind, &'a Path)>,
    cross: i64,
    unet: &str,
) -> Result<()> {
    for (kind, path) in adapters {
        if !path.is_file() {
            continue;
        }
        let file = AdapterFile::open_as(path, kind)?;
        if file.cross_dim != cross {
            bail!(
                "{}: the {kind} adapter makes tokens {} wide (768: SD1.5, 2048: SDXL), but the UNet \
                 of {unet} attends to {cross}-wide text: the adapter is for another pipeline",
                path.display(),
                file.cross_dim,
            );
        }
    }
    Ok(())
}

/// An opened IP-Adapter `.safetensors` file: its kind and shapes, and its tensors (the UNet
/// loads the `ip_adapter.*` ones through [`TensorSource`]).
pub struct AdapterFile {
    file: TensorFile,
    /// The kind given ([`open_as`](Self::open_as)), else the first of the file's family.
    pub kind: AdapterKind,
    pub family: Family,
    /// Image tokens the projection produces (0 for full face: one per encoder position).
    pub num_tokens: i64,
    /// Width of the tokens = the UNet's cross-attention width.
    pub cross_dim: i64,
    /// Width of the image-encoder output it reads: `projection_dim` (base) or `hidden_size`
    /// (Plus, full face).
    pub embed_dim: i64,
    /// The MLP's inner width (full face).
    pub mlp_inner: Option<i64>,
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
        let mut mlp_inner = None;
        let (family, num_tokens, cross_dim, embed_dim, resampler) = if file
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
                Family::Resampler,
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
            (Family::Linear, proj[0] / cross, cross, proj[1], None)
        } else if file.contains("image_proj.proj.3.weight") {
            let fc1 = dims(&file, "image_proj.proj.0.weight")?;
            let fc2 = dims(&file, "image_proj.proj.2.weight")?;
            let cross = dims(&file, "image_proj.proj.3.weight")?[0];
            if fc2 != [cross, fc1[0]] {
                bail!(
                    "{}: image_proj.proj.2.weight is {fc2:?}, expected [{cross}, {}] (from proj.0 {fc1:?} and proj.3)",
                    path.display(),
                    fc1[0]
                );
            }
            mlp_inner = Some(fc1[0]);
            // One token per encoder position: the count comes from the encoder (257 for ViT-H).
            (Family::Mlp, 0, cross, fc1[1], None)
        } else if file.contains("image_proj.proj.0.weight")
            || file
                .names()
                .iter()
                .any(|n| n.starts_with("image_proj.perceiver_resampler."))
        {
            bail!(
                "{}: a FaceID adapter (image_proj.proj.0 without proj.3, or perceiver_resampler): \
                 it reads InsightFace embeddings, which negimg does not compute; adapter kinds read are {}",
                path.display(),
                AdapterKind::NAMES
            );
        } else {
            bail!(
                "{}: unknown image projection (none of image_proj.proj.weight, image_proj.latents, \
                 image_proj.proj.3.weight); adapter kinds read are {}",
                path.display(),
                AdapterKind::NAMES
            );
        };
        let kind = AdapterKind::ALL
            .into_iter()
            .find(|&k| Family::of(k) == family)
            .expect("every family has a kind");
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
            family,
            num_tokens,
            cross_dim,
            embed_dim,
            mlp_inner,
            num_ip_layers,
            resampler,
        })
    }

    /// Opens `path` as the `want` adapter: its keys must be those of `want`'s family (the
    /// kinds within a family cannot be told apart by shape; the name is trusted).
    pub fn open_as(path: &Path, want: AdapterKind) -> Result<Self> {
        let mut file = Self::open(path)?;
        if file.family != Family::of(want) {
            bail!(
                "{}: given as adapter \"{want}\" ({}), but its keys are those of {}",
                path.display(),
                Family::of(want).describe(),
                file.family.describe()
            );
        }
        file.kind = want;
        Ok(file)
    }

    /// The width the image encoder must give this adapter, and what it is.
    fn wanted_encoder_width(&self, cfg: &ClipVisionConfig) -> (i64, &'static str) {
        if self.family.reads_hidden_states() {
            (cfg.hidden_size, "hidden_size")
        } else {
            (cfg.projection_dim, "projection_dim")
        }
    }

    /// Whether the image encoder `cfg` (read from `encoder`) gives the features this adapter
    /// reads: a ViT-bigG adapter (ip-adapter_sdxl, ip-adapter_sd15_vit-G) needs the bigG
    /// encoder, the others ViT-H. Read from the config alone, before any weights load.
    pub fn check_encoder(&self, cfg: &ClipVisionConfig, encoder: &Path) -> Result<()> {
        let (width, field) = self.wanted_encoder_width(cfg);
        if width == self.embed_dim {
            return Ok(());
        }
        let reads = if self.family.reads_hidden_states() {
            "hidden states"
        } else {
            "image_embeds"
        };
        let named = |w: i64| match encoder_name(self.family, w) {
            "" => String::new(),
            name => format!(" ({name})"),
        };
        bail!(
            "{}: the {} adapter reads {reads} {} wide{}, but the image encoder {} gives {width} \
             ({field}){}; ip-adapter_sdxl and ip-adapter_sd15_vit-G go with the ViT-bigG encoder \
             (h94/IP-Adapter sdxl_models/image_encoder), the other adapters with ViT-H \
             (models/image_encoder)",
            self.path().display(),
            self.kind,
            self.embed_dim,
            named(self.embed_dim),
            encoder.display(),
            named(width)
        );
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn tensors(&self) -> &TensorFile {
        &self.file
    }
}

/// The known encoder whose features are `width` wide for `family`, or "".
fn encoder_name(family: Family, width: i64) -> &'static str {
    let (h, g) = (ClipVisionConfig::vit_h(), ClipVisionConfig::vit_big_g());
    let of = |c: &ClipVisionConfig| {
        if family.reads_hidden_states() {
            c.hidden_size
        } else {
            c.projection_dim
        }
    };
    if width == of(&h) {
        "ViT-H"
    } else if width == of(&g) {
        "ViT-bigG"
    } else {
        ""
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

/// Full-face adapter: `LayerNorm(fc2(GELU(fc1(states))))` over every position (keys
/// `proj.0`, `proj.2`, `proj.3`; diffusers' `IPAdapterFullImageProjection`).
pub struct MlpProjection {
    fc1: nn::Linear,
    fc2: nn::Linear,
    norm: nn::LayerNorm,
}

impl MlpProjection {
    /// `vs` is the `image_proj` path.
    pub fn new(vs: nn::Path, embed_dim: i64, inner: i64, cross_dim: i64) -> Self {
        let proj = &vs / "proj";
        MlpProjection {
            fc1: nn::linear(&proj / 0, embed_dim, inner, Default::default()),
            fc2: nn::linear(&proj / 2, inner, cross_dim, Default::default()),
            norm: layer_norm(&proj / 3, cross_dim, 1e-5),
        }
    }

    /// `[B, N, embed]` -> `[B, N, cross]`.
    pub fn forward(&self, states: &Tensor) -> Tensor {
        self.norm
            .forward(&self.fc2.forward(&self.fc1.forward(states).gelu("none")))
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
    /// Heads of `dim_head` each (the projections are `heads * dim_head` wide).
    heads: i64,
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
        }
    }

    fn forward(&self, x: &Tensor, latents: &Tensor) -> Tensor {
        let x = self.norm1.forward(x);
        let latents = self.norm2.forward(latents);
        let q = self.to_q.forward(&latents);
        let kv = self
            .to_kv
            .forward(&Tensor::cat(&[&x, &latents], 1))
            .chunk(2, -1);
        // softmax(q k^T / sqrt(dim_head)) v (IP-Adapter scales q and k by dim_head^-1/4 each).
        self.to_out
            .forward(&multi_head_attention(&q, &kv[0], &kv[1], self.heads, false))
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
    Mlp(MlpProjection),
}

/// The image projection of an adapter file, with the device and dtype it runs in (for the
/// "no image" inputs it makes itself).
pub struct ImageProj {
    net: Projection,
    adapter: AdapterKind,
    device: Device,
    kind: Kind,
}

impl ImageProj {
    /// The `image_proj.*` weights of `file` on `device` in `kind`.
    pub fn load(file: &AdapterFile, device: Device, kind: Kind) -> Result<ImageProj> {
        let net =
            weights::build_and_load(file.tensors(), device, kind, weights::same_name, |vs| {
                let root = vs / "image_proj";
                Ok(match (file.family, &file.resampler, file.mlp_inner) {
                    (Family::Resampler, Some(cfg), _) => {
                        Projection::Plus(Resampler::new(root, cfg))
                    }
                    (Family::Mlp, _, Some(inner)) => Projection::Mlp(MlpProjection::new(
                        root,
                        file.embed_dim,
                        inner,
                        file.cross_dim,
                    )),
                    _ => Projection::Base(ImageProjection::new(
                        root,
                        file.embed_dim,
                        file.cross_dim,
                        file.num_tokens,
                    )),
                })
            })?;
        Ok(ImageProj {
            net,
            adapter: file.kind,
            device,
            kind,
        })
    }

    pub fn adapter_kind(&self) -> AdapterKind {
        self.adapter
    }

    /// Image tokens `[B, T, cross]`: base and light from `image_embeds`, the others from
    /// `hidden_states[-2]`.
    pub fn tokens(&self, vision: &VisionOutput) -> Tensor {
        self.project(&self.features(vision))
    }

    /// What the projection reads from the encoder: `image_embeds` `[B, embed]` (base, light)
    /// or `hidden_states[-2]` `[B, positions, hidden]` (Plus, full face), in the adapter's
    /// kind.
    pub fn features(&self, vision: &VisionOutput) -> Tensor {
        match &self.net {
            Projection::Base(_) => vision.image_embeds.to_kind(self.kind),
            Projection::Plus(_) | Projection::Mlp(_) => vision.penultimate.to_kind(self.kind),
        }
    }

    /// Tokens `[B, T, cross]` of [`features`](Self::features).
    pub fn project(&self, features: &Tensor) -> Tensor {
        match &self.net {
            Projection::Base(p) => p.forward(features),
            Projection::Plus(r) => r.forward(features),
            Projection::Mlp(m) => m.forward(features),
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
    /// `Reference` (IP-Adapter's): base = an all-zero `image_embeds`; Plus and full face =
    /// the encoder states of an all-zero *normalized* pixel tensor.
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
            (NoImage::Reference, Projection::Plus(_) | Projection::Mlp(_)) => {
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

/// The shapes of a random projection ([`write_random_projection`]).
#[derive(Debug, Clone, Copy)]
pub enum RandomProjection {
    /// `image_embeds` `embed` wide -> `tokens` tokens `cross` wide.
    Linear {
        embed: i64,
        cross: i64,
        tokens: i64,
    },
    Resampler(ResamplerConfig),
    /// `hidden_states` `embed` wide -> same positions, `cross` wide (inner width = embed,
    /// as IP-Adapter's full-face MLP).
    Mlp {
        embed: i64,
        cross: i64,
    },
}

impl RandomProjection {
    /// IP-Adapter's projection of `kind` for an encoder feature width `embed_dim` (see
    /// [`embed_dim_for`]) and a UNet cross-attention width `cross_dim`; the Resampler is
    /// [`ResamplerConfig::standard`].
    pub fn standard(kind: AdapterKind, cross_dim: i64, embed_dim: i64) -> Self {
        match Family::of(kind) {
            Family::Linear => RandomProjection::Linear {
                embed: embed_dim,
                cross: cross_dim,
                tokens: BASE_TOKENS,
            },
            Family::Resampler => {
                RandomProjection::Resampler(ResamplerConfig::standard(embed_dim, cross_dim))
            }
            Family::Mlp => RandomProjection::Mlp {
                embed: embed_dim,
                cross: cross_dim,
            },
        }
    }

    fn cross_dim(&self) -> i64 {
        match self {
            RandomProjection::Linear { cross, .. } | RandomProjection::Mlp { cross, .. } => *cross,
            RandomProjection::Resampler(c) => c.output_dim,
        }
    }
}

/// Writes a random IP-Adapter file of `kind` (flat `image_proj.*` + `ip_adapter.*` keys, fp32).
/// `embed_dim` is the image encoder's feature width ([`embed_dim_for`]); `attn_hidden_sizes`
/// are the UNet cross-attention widths in `ip_adapter` key order (k = 1, 3, 5, ...). Shapes
/// as [`RandomProjection::standard`].
pub fn write_random(
    path: &Path,
    kind: AdapterKind,
    cross_dim: i64,
    embed_dim: i64,
    attn_hidden_sizes: &[i64],
    seed: i64,
) -> Result<()> {
    write_random_projection(
        path,
        &RandomProjection::standard(kind, cross_dim, embed_dim),
        attn_hidden_sizes,
        seed,
    )
}

/// Writes a random IP-Adapter file with the projection `proj`.
pub fn write_random_projection(
    path: &Path,
    proj: &RandomProjection,
    attn_hidden_sizes: &[i64],
    seed: i64,
) -> Result<()> {
    let vs = weights::random::random_var_store(seed, 0.02, |root| {
        let cross_dim = proj.cross_dim();
        match *proj {
            RandomProjection::Linear {
                embed,
                cross,
                tokens,
            } => {
                ImageProjection::new(&root / "image_proj", embed, cross, tokens);
            }
            RandomProjection::Resampler(cfg) => {
                Resampler::new(&root / "image_proj", &cfg);
            }
            RandomProjection::Mlp { embed, cross } => {
                MlpProjection::new(&root / "image_proj", embed, embed, cross);
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
        Ok(())
    })?;
    weights::random::save_var_store(&vs, path, Kind::Float)
}
