//! What SDXL single files (the SGM layout of `sd_xl_base_1.0.safetensors`) add to the LDM
//! layout: the OpenCLIP ViT-bigG text encoder under `conditioner.embedders.1.model.` in
//! open_clip's layout, seen with the names of transformers' CLIPTextModelWithProjection (as
//! diffusers' `convert_open_clip_checkpoint` converts it), and the configs SDXL's shapes imply.
//! The CLIP ViT-L under `conditioner.embedders.0.transformer.` is in transformers' layout
//! already, and the UNet's `label_emb.0.{0,2}` (the `text_time` embedding) is mapped with the
//! other UNet keys.
use super::{Reshape, count, dim_of, infer_vae_config, shape_of, unet_config_of_shapes};
use crate::models::clip_text::ClipTextConfig;
use crate::models::unet::{OneOrMany, UNet2DConditionConfig};
use crate::models::vae::AutoencoderKLConfig;
use crate::weights::TensorSource;
use anyhow::{Result, ensure};
use std::collections::BTreeMap;

/// Width of one attention head in SDXL's UNet (its `attention_head_dim` 5, 10, 20 are head
/// counts of the 320, 640, 1280 channels) and text encoders.
pub const SDXL_HEAD_DIM: i64 = 64;

/// The time ids of SDXL's micro-conditioning (original size, crop, target size).
const TIME_IDS: i64 = 6;

/// The diffusers names of the OpenCLIP tensors under `prefix` (see [`open_clip_key`]).
pub(super) fn map_open_clip(names: &[String], prefix: &str) -> BTreeMap<String, (String, Reshape)> {
    let mut map = BTreeMap::new();
    for name in names {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        let mapped = open_clip_key(key);
        if mapped.is_empty() {
            log::debug!("OpenCLIP tensor {name:?} has no transformers counterpart; ignored");
        }
        for (diffusers, reshape) in mapped {
            map.insert(diffusers, (name.clone(), reshape));
        }
    }
    map
}

/// The transformers names of one open_clip text-tower key (without the prefix): a fused
/// `attn.in_proj_weight`/`in_proj_bias` gives three (q, k, v), `text_projection` is read
/// transposed, keys of no counterpart (`logit_scale`) none.
fn open_clip_key(key: &str) -> Vec<(String, Reshape)> {
    let same = |name: String| vec![(name, Reshape::Same)];
    match key {
        "positional_embedding" => {
            return same("text_model.embeddings.position_embedding.weight".into());
        }
        "token_embedding.weight" => {
            return same("text_model.embeddings.token_embedding.weight".into());
        }
        "text_projection" => return vec![("text_projection.weight".into(), Reshape::Transpose)],
        _ => {}
    }
    if let Some(tail) = key.strip_prefix("ln_final.") {
        return same(format!("text_model.final_layer_norm.{tail}"));
    }
    let Some((layer, rest)) = key
        .strip_prefix("transformer.resblocks.")
        .and_then(|k| k.split_once('.'))
    else {
        return Vec::new();
    };
    let layer_name = format!("text_model.encoder.layers.{layer}");
    if let Some(param) = rest.strip_prefix("attn.in_proj_") {
        return ["q", "k", "v"]
            .into_iter()
            .zip(0..)
            .map(|(part, i)| {
                (
                    format!("{layer_name}.self_attn.{part}_proj.{param}"),
                    Reshape::Third(i),
                )
            })
            .collect();
    }
    let renames = [
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
        ("attn.out_proj.", "self_attn.out_proj."),
    ];
    renames
        .into_iter()
        .find_map(|(open_clip, transformers)| {
            let tail = rest.strip_prefix(open_clip)?;
            Some(same(format!("{layer_name}.{transformers}{tail}")))
        })
        .unwrap_or_default()
}

/// The SDXL UNet config that fits the shapes of `unet` (diffusers names), given the width of
/// the pooled text embedding (the second text encoder's projection): what the shapes tell
/// (see `infer_unet_config`), `channels / 64` heads in each block as SDXL, the `text_time`
/// added embedding with `addition_time_embed_dim` from `add_embedding.linear_1`'s inputs
/// (pooled text + 6 time ids of that width), and SDXL base's sample size.
pub fn infer_sdxl_unet_config(
    unet: &dyn TensorSource,
    pooled_text_dim: i64,
) -> Result<UNet2DConditionConfig> {
    let shaped = unet_config_of_shapes(unet)?;
    let heads = shaped
        .block_out_channels
        .iter()
        .map(|&c| {
            ensure!(
                c % SDXL_HEAD_DIM == 0,
                "UNet channels {c} are not a multiple of SDXL's head width {SDXL_HEAD_DIM}, so \
                 the head count is unknown"
            );
            Ok(c / SDXL_HEAD_DIM)
        })
        .collect::<Result<Vec<_>>>()?;
    let add_in = dim_of(unet, "add_embedding.linear_1.weight", 1)?;
    let time_ids_width = add_in - pooled_text_dim;
    ensure!(
        time_ids_width > 0 && time_ids_width % TIME_IDS == 0,
        "add_embedding.linear_1.weight (label_emb.0.0.weight) takes {add_in} inputs: not the \
         pooled text embedding ({pooled_text_dim} wide) and {TIME_IDS} time-id embeddings"
    );
    let cfg = UNet2DConditionConfig {
        sample_size: UNet2DConditionConfig::sdxl().sample_size,
        attention_head_dim: OneOrMany::Many(heads),
        addition_embed_type: Some("text_time".into()),
        addition_time_embed_dim: Some(time_ids_width / TIME_IDS),
        projection_class_embeddings_input_dim: Some(add_in),
        ..shaped
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The VAE config that fits the shapes of `src` (see `infer_vae_config`), with the SDXL VAE's
/// scaling factor and sample size (the weights do not tell them).
pub fn infer_sdxl_vae_config(src: &dyn TensorSource) -> Result<AutoencoderKLConfig> {
    let sdxl = AutoencoderKLConfig::sdxl();
    Ok(AutoencoderKLConfig {
        scaling_factor: sdxl.scaling_factor,
        sample_size: sdxl.sample_size,
        ..infer_vae_config(src)?
    })
}

/// The config of SDXL's second text encoder that fits the shapes of `src` (transformers
/// names of CLIPTextModelWithProjection): OpenCLIP ViT-bigG's with the vocabulary, width,
/// depth, MLP width, positions and projection of the tensors; `hidden_size / 64` heads, as
/// ViT-bigG.
pub fn infer_sdxl_text_2_config(src: &dyn TensorSource) -> Result<ClipTextConfig> {
    let names = src.names();
    let token = shape_of(src, "text_model.embeddings.token_embedding.weight")?;
    ensure!(token.len() == 2, "token_embedding.weight is not 2-D");
    let hidden = token[1];
    ensure!(
        hidden % SDXL_HEAD_DIM == 0,
        "width {hidden} is not a multiple of ViT-bigG's head width {SDXL_HEAD_DIM}, so the \
         head count is unknown"
    );
    Ok(ClipTextConfig {
        vocab_size: token[0],
        hidden_size: hidden,
        num_attention_heads: hidden / SDXL_HEAD_DIM,
        intermediate_size: dim_of(src, "text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        num_hidden_layers: count(&names, "text_model.encoder.layers.")? as i64,
        max_position_embeddings: dim_of(src, "text_model.embeddings.position_embedding.weight", 0)?,
        projection_dim: dim_of(src, "text_projection.weight", 0)?,
        ..ClipTextConfig::vit_big_g()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_clip_keys_of_sdxl_layout() {
        let one = |key: &str| {
            let mapped = open_clip_key(key);
            assert_eq!(mapped.len(), 1, "{key}: {mapped:?}");
            mapped.into_iter().next().unwrap()
        };
        let cases = [
            (
                "positional_embedding",
                "text_model.embeddings.position_embedding.weight",
            ),
            ("ln_final.bias", "text_model.final_layer_norm.bias"),
            (
                "transformer.resblocks.31.mlp.c_proj.weight",
                "text_model.encoder.layers.31.mlp.fc2.weight",
            ),
            (
                "transformer.resblocks.0.ln_2.bias",
                "text_model.encoder.layers.0.layer_norm2.bias",
            ),
            (
                "transformer.resblocks.3.attn.out_proj.weight",
                "text_model.encoder.layers.3.self_attn.out_proj.weight",
            ),
        ];
        for (open_clip, transformers) in cases {
            assert_eq!(one(open_clip), (transformers.into(), Reshape::Same));
        }
        assert_eq!(
            one("text_projection"),
            ("text_projection.weight".into(), Reshape::Transpose)
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.2.attn.in_proj_bias"),
            vec![
                (
                    "text_model.encoder.layers.2.self_attn.q_proj.bias".into(),
                    Reshape::Third(0)
                ),
                (
                    "text_model.encoder.layers.2.self_attn.k_proj.bias".into(),
                    Reshape::Third(1)
                ),
                (
                    "text_model.encoder.layers.2.self_attn.v_proj.bias".into(),
                    Reshape::Third(2)
                ),
            ]
        );
        assert!(open_clip_key("logit_scale").is_empty());
    }
}
