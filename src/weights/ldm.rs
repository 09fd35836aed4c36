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
//! block count and `layers_per_block` works (SD1.5 and the tiny test models alike); the
//! models themselves are built from the SD1.5 configs by the pipeline.
use super::safetensors_io::{TensorFile, TensorSource};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];
const TEXT_PREFIX: &str = "cond_stage_model.transformer.";

/// How a stored tensor becomes the diffusers tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reshape {
    Same,
    /// A 1x1 conv weight [C, C, 1, 1] (or [C, C, 1]) read as a linear weight [C, C].
    ConvToLinear,
}

/// An opened single-file checkpoint.
pub struct LdmCheckpoint {
    file: Arc<TensorFile>,
    unet: BTreeMap<String, (String, Reshape)>,
    vae: BTreeMap<String, (String, Reshape)>,
    text: BTreeMap<String, (String, Reshape)>,
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
    let text = map_text(&names);
    if log::log_enabled!(log::Level::Debug) {
        let used: std::collections::HashSet<&String> = [&unet, &vae, &text]
            .iter()
            .flat_map(|m| m.values().map(|(ldm, _)| ldm))
            .collect();
        for name in names.iter().filter(|n| !used.contains(n)) {
            log::debug!("{}: tensor {name:?} not used", path.display());
        }
    }
    Ok(LdmCheckpoint {
        file: Arc::new(file),
        unet,
        vae,
        text,
    })
}

impl LdmCheckpoint {
    pub fn path(&self) -> &Path {
        self.file.path()
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
        self.view(&self.text, "text encoder (cond_stage_model.transformer.*)")
    }

    pub fn has_vae(&self) -> bool {
        !self.vae.is_empty()
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
            _ => shape,
        })
    }

    fn get(&self, name: &str, device: Device, kind: Kind) -> Result<Tensor> {
        let (key, reshape) = self.map.get(name).with_context(|| {
            format!("{}: tensor {name:?} is missing", self.file.path().display())
        })?;
        let tensor = self
            .file
            .get(key, device, kind)
            .with_context(|| format!("(diffusers name {name:?})"))?;
        Ok(match reshape {
            Reshape::ConvToLinear if tensor.dim() > 2 => {
                let size = tensor.size();
                tensor.reshape([size[0], size[1]])
            }
            _ => tensor,
        })
    }
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

fn map_text(names: &[String]) -> BTreeMap<String, (String, Reshape)> {
    let mut map = BTreeMap::new();
    for name in names {
        let Some(rest) = name.strip_prefix(TEXT_PREFIX) else {
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
