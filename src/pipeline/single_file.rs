//! Single-file checkpoints in the original LDM layout (A1111, ComfyUI, Civitai), seen in the
//! diffusers layout.
//!
//! One `.safetensors` file holds the UNet under `model.diffusion_model.`, the VAE under
//! `first_stage_model.` and the CLIP text encoder under `cond_stage_model.transformer.`
//! (with or without `text_model.`). Nothing is copied at open time: each component is a
//! [`TensorSource`] view that renames keys (and squeezes the VAE attention's 1x1 convs to
//! linear weights) when a tensor is read. The renaming follows the published conversion
//! (diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
//! `convert_ldm_clip_checkpoint`). Block indices are derived from the file's own keys, so any
//! block count and `layers_per_block` works (SD1.5 and the tiny test models alike).
//!
//! SDXL base files (the SGM layout, told by `conditioner.embedders.{0,1}.*`) have the same
//! UNet and VAE keys (the UNet's `text_time` embedding as `label_emb.0.*`), the CLIP ViT-L
//! under `conditioner.embedders.0.transformer.` and the OpenCLIP ViT-bigG under
//! `conditioner.embedders.1.model.` (see [`sdxl`]). SD2 and the SDXL refiner are refused.
//!
//! A single file has no config.json, so the model configs come from (see
//! [`LdmCheckpoint::unet_config`] and its siblings):
//! 1. `<file name without extension>.configs/{unet,vae,text_encoder,text_encoder_2}/config.json`
//!    beside the file, when present (a diffusers folder of the same model without its
//!    weights; its `tokenizer/`, `tokenizer_2/`, `scheduler/` and model_index.json's
//!    `force_zeros_for_empty_prompt` are used too);
//! 2. otherwise the tensor shapes: channels, blocks, layers, which blocks have attention,
//!    cross-attention width, vocabulary, positions... Head counts are not in the shapes;
//!    they follow Stable Diffusion 1.x: 8 heads in every UNet attention (diffusers'
//!    `attention_head_dim: 8`) and `hidden_size / 64` heads in the text encoder (CLIP
//!    ViT-L/14). Everything else keeps its SD1.5 value, so an SD1.5 checkpoint gets exactly
//!    the SD1.5 configs. SDXL files take SDXL's conventions instead: 64-wide heads in the
//!    UNet and both text encoders, the SDXL VAE's scaling factor, force-zeros on; an
//!    `sd_xl_base_1.0` file gets exactly SDXL base's configs.
use crate::models::clip_text::ClipTextConfig;
use crate::models::unet::{DownBlockType, OneOrMany, UNet2DConditionConfig, UpBlockType};
use crate::models::vae::{AutoencoderKLConfig, VaeDownBlockType, VaeUpBlockType};
use crate::weights::{TensorFile, TensorSource};
use anyhow::{Context, Result, bail, ensure};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

mod sdxl;
pub use sdxl::{infer_sdxl_text_2_config, infer_sdxl_unet_config, infer_sdxl_vae_config};

const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];
const TEXT_PREFIX: &str = "cond_stage_model.transformer.";
/// SDXL's (SGM layout) CLIP ViT-L, in transformers' layout.
const SDXL_TEXT_PREFIX: &str = "conditioner.embedders.0.transformer.";
/// SDXL's OpenCLIP ViT-bigG, in open_clip's layout.
const SDXL_TEXT_2_PREFIX: &str = "conditioner.embedders.1.model.";

/// The model family of a single file, told by its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.x (LDM layout: `cond_stage_model.transformer.*`).
    Sd1,
    /// SDXL base (SGM layout: `conditioner.embedders.{0,1}.*`).
    Sdxl,
}

/// How a stored tensor becomes the diffusers tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reshape {
    Same,
    /// A 1x1 conv weight [C, C, 1, 1] (or [C, C, 1]) read as a linear weight [C, C].
    ConvToLinear,
    /// open_clip's `text_projection` `[width, projection]` (used as `x @ P`) read as a linear
    /// weight `[projection, width]`.
    Transpose,
    /// Part `i` (q, k, v) of a fused `in_proj_weight` / `in_proj_bias`: rows `i*n..(i+1)*n`
    /// of its `3n`.
    Third(i64),
}

/// An opened single-file checkpoint.
pub struct LdmCheckpoint {
    file: Arc<TensorFile>,
    family: Family,
    unet: BTreeMap<String, (String, Reshape)>,
    vae: BTreeMap<String, (String, Reshape)>,
    text: BTreeMap<String, (String, Reshape)>,
    /// SDXL's second text encoder (empty for SD1.x).
    text_2: BTreeMap<String, (String, Reshape)>,
}

/// True when `path` looks like a single-file LDM checkpoint (a file, not a diffusers folder).
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
        && path.extension().is_some_and(|e| {
            e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("ckpt")
        })
}

/// Opens a single-file checkpoint and maps its keys to the diffusers layout.
pub fn open_single_file(path: &Path) -> Result<LdmCheckpoint> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("ckpt") || e.eq_ignore_ascii_case("pt"))
    {
        bail!(
            "{}: pickled checkpoints (.ckpt) are not read (they can run code when loaded); \
             use the .safetensors release of this model, or convert it once with\n  \
             python -c \"import torch, safetensors.torch as st; sd = torch.load('{}', \
             map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); \
             st.save_file({{k: v.contiguous() for k, v in sd.items() if hasattr(v, 'contiguous')}}, \
             '{}')\"",
            path.display(),
            path.display(),
            path.with_extension("safetensors").display()
        );
    }
    let file = TensorFile::open(path)?;
    let names = file.names();
    let family = family_of(path, &names)?;
    let unet = map_unet(&names)
        .with_context(|| format!("{}: cannot map the UNet keys", path.display()))?;
    if unet.is_empty() {
        bail!(
            "{}: not a single-file Stable Diffusion checkpoint: no `{UNET_PREFIX}*` tensors \
             (a diffusers folder has model_index.json; point `pipeline` at that folder instead)",
            path.display()
        );
    }
    let vae = map_vae(&names);
    let (text, text_2) = match family {
        Family::Sd1 => (map_text(&names, TEXT_PREFIX), BTreeMap::new()),
        Family::Sdxl => (
            map_text(&names, SDXL_TEXT_PREFIX),
            sdxl::map_open_clip(&names, SDXL_TEXT_2_PREFIX),
        ),
    };
    if log::log_enabled!(log::Level::Debug) {
        let used: std::collections::HashSet<&String> = [&unet, &vae, &text, &text_2]
            .iter()
            .flat_map(|m| m.values().map(|(ldm, _)| ldm))
            .collect();
        for name in names.iter().filter(|n| !used.contains(n)) {
            log::debug!("{}: tensor {name:?} not used", path.display());
        }
    }
    Ok(LdmCheckpoint {
        file: Arc::new(file),
        family,
        unet,
        vae,
        text,
        text_2,
    })
}

/// SD1.x, or SDXL base when the file has SDXL's two text encoders; other families (SD2, the
/// SDXL refiner, other SGM conditioners) are refused by name.
fn family_of(path: &Path, names: &[String]) -> Result<Family> {
    let find = |prefix: &str| names.iter().find(|n| n.starts_with(prefix));
    if find(SDXL_TEXT_PREFIX).is_some() && find(SDXL_TEXT_2_PREFIX).is_some() {
        return Ok(Family::Sdxl);
    }
    let unsupported = if let Some(key) = find("conditioner.embedders.0.model.") {
        format!(
            "an SDXL refiner checkpoint (its only text encoder is OpenCLIP, {key:?}); the \
             refiner is not supported"
        )
    } else if let Some(key) = find("conditioner.embedders.") {
        format!(
            "an SGM checkpoint whose text encoders are not SDXL base's (it has {key:?} but not \
             both `{SDXL_TEXT_PREFIX}*` and `{SDXL_TEXT_2_PREFIX}*`)"
        )
    } else if let Some(key) = find("cond_stage_model.model.") {
        format!("an SD2 checkpoint (OpenCLIP text encoder, {key:?}); SD2 is not supported")
    } else {
        return Ok(Family::Sd1);
    };
    bail!(
        "{}: {unsupported}; negimg reads Stable Diffusion 1.x and SDXL base single files (or \
         give the model's diffusers folder)",
        path.display()
    )
}

impl LdmCheckpoint {
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The shape of the file's tensor `name` (its own, LDM/SGM name), where it has one.
    pub fn file_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.file.shape(name)
    }

    /// The UNet with diffusers names (`conv_in.weight`, `down_blocks.0.resnets.0.norm1.weight`, ...).
    pub fn unet(&self) -> Result<Box<dyn TensorSource>> {
        self.view(&self.unet, "UNet")
    }

    /// The VAE with diffusers names (`decoder.up_blocks.0.resnets.0.conv1.weight`, ...).
    pub fn vae(&self) -> Result<Box<dyn TensorSource>> {
        self.view(&self.vae, "VAE (first_stage_model.*)")
    }

    /// The CLIP text encoder with transformers names (`text_model.encoder.layers.0...`).
    pub fn text_encoder(&self) -> Result<Box<dyn TensorSource>> {
        match self.family {
            Family::Sd1 => self.view(&self.text, "text encoder (cond_stage_model.transformer.*)"),
            Family::Sdxl => self.view(&self.text, "text encoder (conditioner.embedders.0.*)"),
        }
    }

    /// SDXL's OpenCLIP ViT-bigG with the names of transformers' CLIPTextModelWithProjection
    /// (`text_model.encoder.layers.0.self_attn.q_proj.weight`, `text_projection.weight`, ...).
    pub fn text_encoder_2(&self) -> Result<Box<dyn TensorSource>> {
        self.view(
            &self.text_2,
            "second text encoder (conditioner.embedders.1.model.*)",
        )
    }

    pub fn has_vae(&self) -> bool {
        !self.vae.is_empty()
    }

    /// `<file name without extension>.configs/` beside the checkpoint: a diffusers folder of
    /// the same model without weights, whose configs override those inferred from shapes.
    pub fn config_dir(&self) -> PathBuf {
        self.path().with_extension("configs")
    }

    /// `rel` (e.g. `scheduler/scheduler_config.json`) in [`config_dir`](Self::config_dir),
    /// when it exists.
    pub fn config_file(&self, rel: &str) -> Option<PathBuf> {
        Some(self.config_dir().join(rel)).filter(|p| p.exists())
    }

    /// `unet/config.json` of the config folder, else [`infer_unet_config`] (SD1.x) or
    /// [`infer_sdxl_unet_config`] (SDXL, with the pooled width of the second text encoder's
    /// `text_projection`).
    pub fn unet_config(&self) -> Result<UNet2DConditionConfig> {
        if let Some(path) = self.config_file("unet/config.json") {
            return UNet2DConditionConfig::from_json_file(&path);
        }
        let view = self.unet()?;
        self.inferred("UNet", "unet", || {
            let cfg = match self.family {
                Family::Sd1 => infer_unet_config(view.as_ref())?,
                Family::Sdxl => {
                    let text_2 = self.text_encoder_2()?;
                    let pooled = dim_of(text_2.as_ref(), "text_projection.weight", 0)?;
                    infer_sdxl_unet_config(view.as_ref(), pooled)?
                }
            };
            let reference = match self.family {
                Family::Sd1 => UNet2DConditionConfig::sd15(),
                Family::Sdxl => UNet2DConditionConfig::sdxl(),
            };
            Ok((cfg == reference, cfg))
        })
    }

    /// `vae/config.json` of the config folder, else [`infer_vae_config`] (with the SDXL VAE's
    /// scaling factor for SDXL).
    pub fn vae_config(&self) -> Result<AutoencoderKLConfig> {
        if let Some(path) = self.config_file("vae/config.json") {
            return AutoencoderKLConfig::from_json_file(&path);
        }
        let view = self.vae()?;
        self.inferred("VAE", "vae", || {
            let (cfg, reference) = match self.family {
                Family::Sd1 => (
                    infer_vae_config(view.as_ref())?,
                    AutoencoderKLConfig::sd15(),
                ),
                Family::Sdxl => (
                    infer_sdxl_vae_config(view.as_ref())?,
                    AutoencoderKLConfig::sdxl(),
                ),
            };
            Ok((cfg == reference, cfg))
        })
    }

    /// `text_encoder/config.json` of the config folder, else [`infer_text_config`] (CLIP
    /// ViT-L's, for SD1.x and SDXL alike).
    pub fn text_encoder_config(&self) -> Result<ClipTextConfig> {
        if let Some(path) = self.config_file("text_encoder/config.json") {
            return ClipTextConfig::from_file(&path);
        }
        let view = self.text_encoder()?;
        self.inferred("text encoder", "text_encoder", || {
            let cfg = infer_text_config(view.as_ref())?;
            Ok((same_config(&cfg, &ClipTextConfig::sd15()), cfg))
        })
    }

    /// `text_encoder_2/config.json` of the config folder, else [`infer_sdxl_text_2_config`].
    pub fn text_encoder_2_config(&self) -> Result<ClipTextConfig> {
        if let Some(path) = self.config_file("text_encoder_2/config.json") {
            return ClipTextConfig::from_file(&path);
        }
        let view = self.text_encoder_2()?;
        self.inferred("second text encoder", "text_encoder_2", || {
            let cfg = infer_sdxl_text_2_config(view.as_ref())?;
            Ok((same_config(&cfg, &ClipTextConfig::vit_big_g()), cfg))
        })
    }

    /// `force_zeros_for_empty_prompt` of the config folder's model_index.json, else diffusers'
    /// default: true for SDXL (as SDXL base's model_index.json), false for SD1.x.
    pub fn force_zeros_for_empty_prompt(&self) -> Result<bool> {
        let sdxl = self.family == Family::Sdxl;
        match self.config_file("model_index.json") {
            Some(index) => {
                crate::weights::pipeline_folder::force_zeros_for_empty_prompt(&index, sdxl)
            }
            None => Ok(sdxl),
        }
    }

    /// A config inferred by `infer` (which also says whether it is the family's reference
    /// model's); a model of other shapes gets a warning that its head counts are assumed.
    fn inferred<T>(
        &self,
        what: &str,
        folder: &str,
        infer: impl FnOnce() -> Result<(bool, T)>,
    ) -> Result<T> {
        let hint = || {
            format!(
                "{}: cannot tell the {what} config from the tensor shapes; put its diffusers \
                 config.json in {}",
                self.path().display(),
                self.config_dir().join(folder).display()
            )
        };
        let (reference, cfg) = infer().with_context(hint)?;
        if !reference {
            let (model, heads) = match self.family {
                Family::Sd1 => ("SD1.5", "SD1.x head counts"),
                Family::Sdxl => ("SDXL base", "SDXL's 64-wide heads"),
            };
            log::warn!(
                "{}: the {what} is not {model}'s; its config is inferred from the tensor shapes \
                 with {heads} (put its config.json in {} if that is wrong)",
                self.path().display(),
                self.config_dir().join(folder).display()
            );
        }
        Ok(cfg)
    }

    fn view(
        &self,
        map: &BTreeMap<String, (String, Reshape)>,
        what: &str,
    ) -> Result<Box<dyn TensorSource>> {
        if map.is_empty() {
            bail!(
                "{}: this checkpoint has no {what}; give that model separately in [models]",
                self.path().display()
            );
        }
        Ok(Box::new(MappedSource {
            file: Arc::clone(&self.file),
            map: map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }))
    }
}

/// ClipTextConfig has no PartialEq: compares the serialized configs.
fn same_config(a: &ClipTextConfig, b: &ClipTextConfig) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// A renamed view of some tensors of a file.
struct MappedSource {
    file: Arc<TensorFile>,
    map: HashMap<String, (String, Reshape)>,
}

impl TensorSource for MappedSource {
    fn origin(&self) -> &Path {
        self.file.path()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map.keys().cloned().collect();
        names.sort();
        names
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (key, reshape) = self.map.get(name)?;
        let shape = self.file.shape(key)?;
        Some(match reshape {
            Reshape::ConvToLinear if shape.len() > 2 && shape[2..].iter().all(|&d| d == 1) => {
                shape[..2].to_vec()
            }
            Reshape::Transpose if shape.len() == 2 => vec![shape[1], shape[0]],
            // A fused q/k/v of another height keeps its shape, so the load names it.
            Reshape::Third(_) if !shape.is_empty() && shape[0] % 3 == 0 => {
                [&[shape[0] / 3], &shape[1..]].concat()
            }
            _ => shape,
        })
    }

    fn describe(&self, name: &str) -> String {
        match self.map.get(name) {
            Some((key, Reshape::Third(i))) => {
                format!("{name:?} (part {} of 3 of {key:?} in the file)", i + 1)
            }
            Some((key, _)) => format!("{name:?} ({key:?} in the file)"),
            None => format!("{name:?}"),
        }
    }

    fn get(&self, name: &str, device: Device, kind: Kind) -> Result<Tensor> {
        let (key, reshape) = self.map.get(name).with_context(|| {
            format!("{}: tensor {name:?} is missing", self.file.path().display())
        })?;
        let tensor = self
            .file
            .get(key, device, kind)
            .with_context(|| format!("(diffusers name {name:?})"))?;
        let size = tensor.size();
        Ok(match reshape {
            Reshape::ConvToLinear if tensor.dim() > 2 => tensor.reshape([size[0], size[1]]),
            Reshape::Transpose if tensor.dim() == 2 => tensor.transpose(0, 1).contiguous(),
            Reshape::Third(i) if tensor.dim() > 0 && size[0] % 3 == 0 => {
                let rows = size[0] / 3;
                tensor.narrow(0, i * rows, rows).contiguous()
            }
            _ => tensor,
        })
    }
}

/// Heads of every UNet attention in Stable Diffusion 1.x (diffusers' `attention_head_dim`,
/// which is a head count there).
const SD1_UNET_HEADS: i64 = 8;
/// Width of one text-encoder head in CLIP ViT-L/14, SD1.x's text encoder.
const SD1_TEXT_HEAD_DIM: i64 = 64;

fn shape_of(src: &dyn TensorSource, name: &str) -> Result<Vec<i64>> {
    let shape = src
        .shape(name)
        .with_context(|| format!("{}: no tensor {name:?}", src.origin().display()))?;
    Ok(shape.into_iter().map(|d| d as i64).collect())
}

fn dim_of(src: &dyn TensorSource, name: &str, i: usize) -> Result<i64> {
    let shape = shape_of(src, name)?;
    shape.get(i).copied().with_context(|| {
        format!(
            "{}: tensor {name:?} has shape {shape:?}, expected more dimensions",
            src.origin().display()
        )
    })
}

/// How many `{prefix}{i}.` there are, checking that `i` runs 0, 1, ... without gaps.
fn count(names: &[String], prefix: &str) -> Result<usize> {
    let found: BTreeSet<usize> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .collect();
    ensure!(
        found.iter().copied().eq(0..found.len()),
        "`{prefix}*` indices {found:?} are not 0, 1, 2..."
    );
    Ok(found.len())
}

/// The UNet config that fits the shapes of `src` (diffusers names): SD1.5's with the block
/// channels, layers per block, attention blocks, cross-attention width, transformer depths,
/// projection kind, time embedding width and in/out channels and kernels of the tensors; 8
/// heads in every attention, as SD1.x.
pub fn infer_unet_config(src: &dyn TensorSource) -> Result<UNet2DConditionConfig> {
    let cfg = UNet2DConditionConfig {
        attention_head_dim: OneOrMany::One(SD1_UNET_HEADS),
        ..unet_config_of_shapes(src)?
    };
    cfg.validate()?;
    Ok(cfg)
}

/// What the UNet's tensor shapes tell (on top of SD1.5's config); the head counts are the
/// caller's.
fn unet_config_of_shapes(src: &dyn TensorSource) -> Result<UNet2DConditionConfig> {
    let names = src.names();
    let has = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
    let conv_in = shape_of(src, "conv_in.weight")?;
    let conv_out = shape_of(src, "conv_out.weight")?;
    ensure!(
        conv_in.len() == 4 && conv_out.len() == 4,
        "conv_in/conv_out weights are not 4-D convolutions"
    );
    let n = count(&names, "down_blocks.")?;
    ensure!(n > 0, "no down_blocks");
    let block_out_channels = (0..n)
        .map(|b| dim_of(src, &format!("down_blocks.{b}.resnets.0.conv1.weight"), 0))
        .collect::<Result<Vec<_>>>()?;
    let layers = count(&names, "down_blocks.0.resnets.")? as i64;
    let cross = |blocks: &str| {
        (0..n)
            .map(|b| has(&format!("{blocks}.{b}.attentions.")))
            .collect::<Vec<_>>()
    };
    let mid = "mid_block.attentions.0.";
    let time_dim = dim_of(src, "time_embedding.linear_1.weight", 0)?;
    Ok(UNet2DConditionConfig {
        in_channels: conv_in[1],
        out_channels: conv_out[0],
        conv_in_kernel: conv_in[2],
        conv_out_kernel: conv_out[2],
        down_block_types: cross("down_blocks")
            .into_iter()
            .map(DownBlockType::with_cross_attention)
            .collect(),
        up_block_types: cross("up_blocks")
            .into_iter()
            .map(UpBlockType::with_cross_attention)
            .collect(),
        layers_per_block: OneOrMany::One(layers),
        cross_attention_dim: OneOrMany::One(dim_of(
            src,
            &format!("{mid}transformer_blocks.0.attn2.to_k.weight"),
            1,
        )?),
        transformer_layers_per_block: transformer_depths(&names, n)?,
        // SD2-style UNets project in and out with linear layers, SD1 with 1x1 convs.
        use_linear_projection: shape_of(src, &format!("{mid}proj_in.weight"))?.len() == 2,
        time_embedding_dim: (time_dim != 4 * block_out_channels[0]).then_some(time_dim),
        block_out_channels,
        ..UNet2DConditionConfig::sd15()
    })
}

/// `transformer_layers_per_block` as diffusers reads it: one depth per down block (1 where a
/// block has no attention, the mid block's for the last), the up blocks taking them in
/// reverse and the mid block the last; one value when all attentions have the same depth
/// (SD1.x: 1; SDXL: 1, 2, 10).
fn transformer_depths(names: &[String], n: usize) -> Result<OneOrMany<i64>> {
    let has = |prefix: &str| names.iter().any(|k| k.starts_with(prefix));
    // The depth of every attention of `block` (`down_blocks.1`, `mid_block`), which must agree.
    let depth_of = |block: &str| -> Result<Option<i64>> {
        let attentions = count(names, &format!("{block}.attentions."))?;
        let depths: BTreeSet<usize> = (0..attentions)
            .map(|j| {
                count(
                    names,
                    &format!("{block}.attentions.{j}.transformer_blocks."),
                )
            })
            .collect::<Result<_>>()?;
        ensure!(
            depths.len() <= 1,
            "the attentions of {block} have different transformer depths {depths:?}"
        );
        Ok(depths.into_iter().next().map(|d| d as i64))
    };
    let mid = if has("mid_block.attentions.") {
        depth_of("mid_block")?
    } else {
        None
    };
    let mut depths = Vec::with_capacity(n);
    for b in 0..n {
        let up_block = format!("up_blocks.{}", n - 1 - b);
        let (down, up) = (depth_of(&format!("down_blocks.{b}"))?, depth_of(&up_block)?);
        if let (Some(down), Some(up)) = (down, up) {
            ensure!(
                up == down,
                "{up_block}'s attentions are {up} transformer layers deep, down_blocks.{b}'s \
                 {down} (diffusers' reverse_transformer_layers_per_block is not supported)"
            );
        }
        let last = (b + 1 == n).then_some(mid).flatten();
        depths.push(down.or(up).or(last).unwrap_or(1));
    }
    if let Some(mid) = mid {
        ensure!(
            mid == depths[n - 1],
            "the mid block is {mid} transformer layers deep, the last down block {}",
            depths[n - 1]
        );
    }
    Ok(match depths.iter().collect::<BTreeSet<_>>().len() {
        1 => OneOrMany::One(depths[0]),
        _ => OneOrMany::Many(depths),
    })
}

/// The VAE config that fits the shapes of `src` (diffusers names): SD1.5's with the block
/// channels, layers per block, latent and image channels, quant convs and mid attention of
/// the tensors.
pub fn infer_vae_config(src: &dyn TensorSource) -> Result<AutoencoderKLConfig> {
    let names = src.names();
    let has = |name: &str| names.iter().any(|n| n == name);
    let n = count(&names, "encoder.down_blocks.")?;
    ensure!(n > 0, "no encoder.down_blocks");
    let cfg = AutoencoderKLConfig {
        in_channels: dim_of(src, "encoder.conv_in.weight", 1)?,
        out_channels: dim_of(src, "decoder.conv_out.weight", 0)?,
        down_block_types: vec![VaeDownBlockType::DownEncoderBlock2D; n],
        up_block_types: vec![VaeUpBlockType::UpDecoderBlock2D; n],
        block_out_channels: (0..n)
            .map(|b| {
                dim_of(
                    src,
                    &format!("encoder.down_blocks.{b}.resnets.0.conv1.weight"),
                    0,
                )
            })
            .collect::<Result<Vec<_>>>()?,
        layers_per_block: count(&names, "encoder.down_blocks.0.resnets.")? as i64,
        latent_channels: dim_of(src, "decoder.conv_in.weight", 1)?,
        use_quant_conv: has("quant_conv.weight"),
        use_post_quant_conv: has("post_quant_conv.weight"),
        mid_block_add_attention: has("encoder.mid_block.attentions.0.to_q.weight"),
        ..AutoencoderKLConfig::sd15()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The CLIP text config that fits the shapes of `src` (transformers names): SD1.5's with the
/// vocabulary, width, depth, MLP width and positions of the tensors; `hidden_size / 64`
/// heads, as CLIP ViT-L/14.
pub fn infer_text_config(src: &dyn TensorSource) -> Result<ClipTextConfig> {
    let names = src.names();
    let token = shape_of(src, "text_model.embeddings.token_embedding.weight")?;
    ensure!(token.len() == 2, "token_embedding.weight is not 2-D");
    let hidden = token[1];
    ensure!(
        hidden % SD1_TEXT_HEAD_DIM == 0,
        "width {hidden} is not a multiple of SD1.x's head width {SD1_TEXT_HEAD_DIM}, so the \
         head count is unknown"
    );
    Ok(ClipTextConfig {
        vocab_size: token[0],
        hidden_size: hidden,
        num_attention_heads: hidden / SD1_TEXT_HEAD_DIM,
        intermediate_size: dim_of(src, "text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        num_hidden_layers: count(&names, "text_model.encoder.layers.")? as i64,
        max_position_embeddings: dim_of(src, "text_model.embeddings.position_embedding.weight", 0)?,
        ..ClipTextConfig::sd15()
    })
}

/// `input_blocks.{i}` of LDM hold `layers_per_block` resnets (+attention) per down block and
/// then one downsampler (`input_blocks.{i}.0.op`); the first `op` gives `layers_per_block`.
fn layers_per_block(keys: &[&str]) -> Result<usize> {
    let mut first_op = None;
    let mut max_input = 0;
    for key in keys {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() > 2 && parts[0] == "input_blocks" {
            let i: usize = parts[1].parse().with_context(|| format!("key {key:?}"))?;
            max_input = max_input.max(i);
            if parts[2] == "0" && parts.get(3) == Some(&"op") {
                first_op = Some(first_op.map_or(i, |f: usize| f.min(i)));
            }
        }
    }
    Ok(match first_op {
        Some(i) => i - 1,
        // One down block only: every input block after conv_in is a layer.
        None => max_input,
    })
}

fn map_unet(names: &[String]) -> Result<BTreeMap<String, (String, Reshape)>> {
    let keys: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix(UNET_PREFIX))
        .collect();
    let mut map = BTreeMap::new();
    if keys.is_empty() {
        return Ok(map);
    }
    let per_block = layers_per_block(&keys)? + 1;
    for key in keys {
        if let Some(name) = unet_key(key, per_block) {
            map.insert(name, (format!("{UNET_PREFIX}{key}"), Reshape::Same));
        } else {
            log::debug!("LDM UNet tensor {key:?} has no diffusers counterpart; ignored");
        }
    }
    Ok(map)
}

/// The diffusers name of one LDM UNet key (without `model.diffusion_model.`).
/// `per_block` = layers_per_block + 1 (the extra slot is the down/upsampler).
fn unet_key(key: &str, per_block: usize) -> Option<String> {
    let fixed = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        // SDXL's `text_time` embedding (pooled text and time ids).
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
        ("middle_block.0.", "mid_block.resnets.0."),
        ("middle_block.1.", "mid_block.attentions.0."),
        ("middle_block.2.", "mid_block.resnets.1."),
    ];
    for (ldm, diffusers) in fixed {
        if let Some(rest) = key.strip_prefix(ldm) {
            return Some(
                if ldm.starts_with("middle_block.0") || ldm.starts_with("middle_block.2") {
                    format!("{diffusers}{}", resnet_suffix(rest))
                } else {
                    format!("{diffusers}{rest}")
                },
            );
        }
    }
    let mut parts = key.splitn(4, '.');
    let (group, index, slot, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let i: usize = index.parse().ok()?;
    match group {
        "input_blocks" => {
            let (block, layer) = ((i - 1) / per_block, (i - 1) % per_block);
            match (slot, layer == per_block - 1) {
                ("0", true) => {
                    let rest = rest.strip_prefix("op.")?;
                    Some(format!("down_blocks.{block}.downsamplers.0.conv.{rest}"))
                }
                ("0", false) => Some(format!(
                    "down_blocks.{block}.resnets.{layer}.{}",
                    resnet_suffix(rest)
                )),
                ("1", false) => Some(format!("down_blocks.{block}.attentions.{layer}.{rest}")),
                _ => None,
            }
        }
        "output_blocks" => {
            let (block, layer) = (i / per_block, i % per_block);
            match slot {
                "0" => Some(format!(
                    "up_blocks.{block}.resnets.{layer}.{}",
                    resnet_suffix(rest)
                )),
                // The upsampler follows the last resnet, after its attention if there is one.
                "1" | "2" if rest.starts_with("conv.") => {
                    Some(format!("up_blocks.{block}.upsamplers.0.{rest}"))
                }
                "1" => Some(format!("up_blocks.{block}.attentions.{layer}.{rest}")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// ResBlock parameter names: LDM's Sequential indices -> diffusers' ResnetBlock2D names.
fn resnet_suffix(rest: &str) -> String {
    let renames = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ];
    for (ldm, diffusers) in renames {
        if let Some(tail) = rest.strip_prefix(ldm) {
            return format!("{diffusers}{tail}");
        }
    }
    rest.to_string()
}

fn map_vae(names: &[String]) -> BTreeMap<String, (String, Reshape)> {
    let Some(prefix) = VAE_PREFIXES
        .into_iter()
        .find(|p| names.iter().any(|n| n.starts_with(p)))
    else {
        return BTreeMap::new();
    };
    let keys: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix))
        .collect();
    // The decoder's `up.{b}` are numbered from the lowest resolution up; diffusers'
    // `up_blocks` run the other way.
    let up_blocks = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix("decoder.up.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |m| m + 1);
    let mut map = BTreeMap::new();
    for key in keys {
        match vae_key(key, up_blocks) {
            Some((name, reshape)) => {
                map.insert(name, (format!("{prefix}{key}"), reshape));
            }
            None => log::debug!("LDM VAE tensor {key:?} has no diffusers counterpart; ignored"),
        }
    }
    map
}

fn vae_key(key: &str, up_blocks: usize) -> Option<(String, Reshape)> {
    let same = |s: String| Some((s, Reshape::Same));
    let (coder, rest) = key.split_once('.')?;
    if !matches!(coder, "encoder" | "decoder") {
        return matches!(coder, "quant_conv" | "post_quant_conv")
            .then(|| (key.to_string(), Reshape::Same));
    }
    if let Some(tail) = rest.strip_prefix("norm_out.") {
        return same(format!("{coder}.conv_norm_out.{tail}"));
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return same(key.to_string());
    }
    if let Some(mid) = rest.strip_prefix("mid.") {
        if let Some(tail) = mid.strip_prefix("block_1.") {
            return same(format!("{coder}.mid_block.resnets.0.{}", vae_resnet(tail)));
        }
        if let Some(tail) = mid.strip_prefix("block_2.") {
            return same(format!("{coder}.mid_block.resnets.1.{}", vae_resnet(tail)));
        }
        let tail = mid.strip_prefix("attn_1.")?;
        let (param, kind) = tail.split_once('.')?;
        let (name, reshape) = match param {
            "norm" => ("group_norm", Reshape::Same),
            "q" => ("to_q", Reshape::ConvToLinear),
            "k" => ("to_k", Reshape::ConvToLinear),
            "v" => ("to_v", Reshape::ConvToLinear),
            "proj_out" => ("to_out.0", Reshape::ConvToLinear),
            _ => return None,
        };
        return Some((
            format!("{coder}.mid_block.attentions.0.{name}.{kind}"),
            reshape,
        ));
    }
    let (dir, rest) = rest.split_once('.')?;
    let (index, rest) = rest.split_once('.')?;
    let b: usize = index.parse().ok()?;
    let (blocks, block) = match (coder, dir) {
        ("encoder", "down") => ("down_blocks", b),
        ("decoder", "up") => ("up_blocks", up_blocks.checked_sub(b + 1)?),
        _ => return None,
    };
    if let Some(tail) = rest.strip_prefix("block.") {
        let (layer, tail) = tail.split_once('.')?;
        return same(format!(
            "{coder}.{blocks}.{block}.resnets.{layer}.{}",
            vae_resnet(tail)
        ));
    }
    let tail = rest
        .strip_prefix("downsample.")
        .or_else(|| rest.strip_prefix("upsample."))?;
    let sampler = if dir == "down" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    same(format!("{coder}.{blocks}.{block}.{sampler}.0.{tail}"))
}

fn vae_resnet(tail: &str) -> String {
    match tail.strip_prefix("nin_shortcut.") {
        Some(t) => format!("conv_shortcut.{t}"),
        None => tail.to_string(),
    }
}

fn map_text(names: &[String], prefix: &str) -> BTreeMap<String, (String, Reshape)> {
    let mut map = BTreeMap::new();
    for name in names {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        // Older checkpoints were saved before transformers moved CLIP under `text_model.`.
        let diffusers = if rest.starts_with("text_model.") {
            rest.to_string()
        } else {
            format!("text_model.{rest}")
        };
        map.insert(diffusers, (name.clone(), Reshape::Same));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_keys_of_sd15_layout() {
        let per_block = 3;
        let cases = [
            (
                "input_blocks.1.0.in_layers.0.weight",
                "down_blocks.0.resnets.0.norm1.weight",
            ),
            (
                "input_blocks.2.1.proj_in.weight",
                "down_blocks.0.attentions.1.proj_in.weight",
            ),
            (
                "input_blocks.3.0.op.weight",
                "down_blocks.0.downsamplers.0.conv.weight",
            ),
            (
                "input_blocks.4.0.skip_connection.bias",
                "down_blocks.1.resnets.0.conv_shortcut.bias",
            ),
            (
                "input_blocks.11.0.emb_layers.1.weight",
                "down_blocks.3.resnets.1.time_emb_proj.weight",
            ),
            (
                "middle_block.2.out_layers.3.bias",
                "mid_block.resnets.1.conv2.bias",
            ),
            (
                "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            ),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "output_blocks.5.2.conv.bias",
                "up_blocks.1.upsamplers.0.conv.bias",
            ),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.11.0.out_layers.0.weight",
                "up_blocks.3.resnets.2.norm2.weight",
            ),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                unet_key(ldm, per_block).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
    }

    #[test]
    fn vae_decoder_blocks_are_reversed_and_attention_squeezed() {
        assert_eq!(
            vae_key("decoder.up.3.block.0.nin_shortcut.weight", 4),
            Some((
                "decoder.up_blocks.0.resnets.0.conv_shortcut.weight".into(),
                Reshape::Same
            ))
        );
        assert_eq!(
            vae_key("decoder.up.1.upsample.conv.bias", 4),
            Some((
                "decoder.up_blocks.2.upsamplers.0.conv.bias".into(),
                Reshape::Same
            ))
        );
        assert_eq!(
            vae_key("encoder.mid.attn_1.proj_out.weight", 4),
            Some((
                "encoder.mid_block.attentions.0.to_out.0.weight".into(),
                Reshape::ConvToLinear
            ))
        );
    }
}
