"""Writes a tiny Stable Diffusion model twice: in the diffusers layout and as one single-file
checkpoint in the original LDM layout (A1111 / ComfyUI / Civitai), for tests/ldm_single_file.rs
and tests/ldm_images.rs.

usage: ldm_write_tiny.py OUT_DIR [PIPELINE_DIR]

OUT_DIR/unet.safetensors, vae.safetensors, text_encoder.safetensors: diffusers/transformers
state dicts of random tiny models, or, given PIPELINE_DIR (a diffusers folder such as
`negimg models init-random` writes), the weights of that folder's unet/, vae/ and
text_encoder/ as they are stored. OUT_DIR/ldm.safetensors: the same tensors under LDM names
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.text_model.*`),
plus an EMA tensor and position_ids as real checkpoints have. OUT_DIR/ldm_old_clip.safetensors:
the same with the text encoder saved without `text_model.` (older transformers).

The diffusers -> LDM names below follow diffusers' published conversion script
(scripts/convert_diffusers_to_original_stable_diffusion.py), generalised to any block count
and layers_per_block. They are not taken on trust: the LDM dict is converted back with
diffusers' own single-file converters (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint) and must give the original state dicts exactly.
"""
import json
import os
import sys
from types import SimpleNamespace

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel


def randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]


def unet_prefixes(cfg):
    """diffusers prefix -> (LDM prefix, is_resnet)."""
    n, L = len(cfg.block_out_channels), cfg.layers_per_block
    m = {
        "time_embedding.linear_1.": ("time_embed.0.", False),
        "time_embedding.linear_2.": ("time_embed.2.", False),
        # SDXL's text_time embedding (absent from SD1.x UNets).
        "add_embedding.linear_1.": ("label_emb.0.0.", False),
        "add_embedding.linear_2.": ("label_emb.0.2.", False),
        "conv_in.": ("input_blocks.0.0.", False),
        "conv_norm_out.": ("out.0.", False),
        "conv_out.": ("out.2.", False),
        "mid_block.resnets.0.": ("middle_block.0.", True),
        "mid_block.attentions.0.": ("middle_block.1.", False),
        "mid_block.resnets.1.": ("middle_block.2.", True),
    }
    for b in range(n):
        down_attn = cfg.down_block_types[b].startswith("CrossAttn")
        for j in range(L):
            i = 1 + b * (L + 1) + j
            m[f"down_blocks.{b}.resnets.{j}."] = (f"input_blocks.{i}.0.", True)
            if down_attn:
                m[f"down_blocks.{b}.attentions.{j}."] = (f"input_blocks.{i}.1.", False)
        if b < n - 1:
            m[f"down_blocks.{b}.downsamplers.0.conv."] = (f"input_blocks.{1 + b * (L + 1) + L}.0.op.", False)
        up_attn = cfg.up_block_types[b].startswith("CrossAttn")
        for j in range(L + 1):
            i = b * (L + 1) + j
            m[f"up_blocks.{b}.resnets.{j}."] = (f"output_blocks.{i}.0.", True)
            if up_attn:
                m[f"up_blocks.{b}.attentions.{j}."] = (f"output_blocks.{i}.1.", False)
        if b < n - 1:
            slot = 2 if up_attn else 1
            m[f"up_blocks.{b}.upsamplers.0."] = (f"output_blocks.{b * (L + 1) + L}.{slot}.", False)
    return m


def unet_to_ldm(sd, cfg):
    prefixes = unet_prefixes(cfg)
    out = {}
    for key, value in sd.items():
        match = max((p for p in prefixes if key.startswith(p)), key=len)
        ldm, is_resnet = prefixes[match]
        rest = key[len(match):]
        if is_resnet:
            for new, old in RESNET:
                if rest.startswith(new + "."):
                    rest = old + rest[len(new):]
        out["model.diffusion_model." + ldm + rest] = value
    return out


def vae_to_ldm(sd, cfg):
    n = len(cfg.up_block_types)
    out = {}
    for key, value in sd.items():
        k = key
        for coder in ("encoder", "decoder"):
            k = k.replace(f"{coder}.conv_norm_out.", f"{coder}.norm_out.")
            k = k.replace(f"{coder}.mid_block.resnets.0.", f"{coder}.mid.block_1.")
            k = k.replace(f"{coder}.mid_block.resnets.1.", f"{coder}.mid.block_2.")
            k = k.replace(f"{coder}.mid_block.attentions.0.", f"{coder}.mid.attn_1.")
        for b in range(n):
            k = k.replace(f"encoder.down_blocks.{b}.resnets.", f"encoder.down.{b}.block.")
            k = k.replace(f"encoder.down_blocks.{b}.downsamplers.0.", f"encoder.down.{b}.downsample.")
            k = k.replace(f"decoder.up_blocks.{b}.resnets.", f"decoder.up.{n - 1 - b}.block.")
            k = k.replace(f"decoder.up_blocks.{b}.upsamplers.0.", f"decoder.up.{n - 1 - b}.upsample.")
        k = k.replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in k:
            for new, old in [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]:
                k = k.replace(".mid.attn_1." + new, ".mid.attn_1." + old)
            if k.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]  # linear -> 1x1 conv, as LDM stores them
        out["first_stage_model." + k] = value
    return out


def assert_same(converted, original, what):
    assert set(converted) == set(original), (
        what,
        sorted(set(converted) ^ set(original))[:10],
    )
    for k, v in original.items():
        assert torch.equal(converted[k].reshape(v.shape), v), (what, k)
        assert converted[k].shape == v.shape, (what, k, converted[k].shape, v.shape)


def random_models():
    """(unet_sd, unet_config, vae_sd, vae_config, text_sd) of random tiny models."""
    unet = randomize(
        UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        ),
        1,
    )
    vae = randomize(
        AutoencoderKL(
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=32,
            sample_size=32,
        ),
        2,
    )
    text = randomize(
        CLIPTextModel(
            CLIPTextConfig(
                vocab_size=1000,
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
            )
        ),
        3,
    )
    unet_sd = {k: v.contiguous() for k, v in unet.state_dict().items()}
    vae_sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    text_sd = {k: v.contiguous() for k, v in text.state_dict().items()}
    return unet_sd, dict(unet.config), vae_sd, dict(vae.config), text_sd


def folder_models(folder):
    """The same from a diffusers pipeline folder: its tensors untouched, its configs."""

    def part(name, weights):
        with open(os.path.join(folder, name, "config.json")) as f:
            config = json.load(f)
        return load_file(os.path.join(folder, name, weights)), config

    unet_sd, unet_cfg = part("unet", "diffusion_pytorch_model.safetensors")
    vae_sd, vae_cfg = part("vae", "diffusion_pytorch_model.safetensors")
    text_sd, _ = part("text_encoder", "model.safetensors")
    return unet_sd, unet_cfg, vae_sd, vae_cfg, text_sd


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    if len(sys.argv) > 2:
        unet_sd, unet_cfg, vae_sd, vae_cfg, text_sd = folder_models(sys.argv[2])
    else:
        unet_sd, unet_cfg, vae_sd, vae_cfg, text_sd = random_models()
    # Files on the hub (and transformers < 5) name the text encoder's tensors `text_model.*`.
    text_sd = {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in text_sd.items()}

    ldm = {}
    ldm.update(unet_to_ldm(unet_sd, SimpleNamespace(**unet_cfg)))
    ldm.update(vae_to_ldm(vae_sd, SimpleNamespace(**vae_cfg)))
    ldm.update({"cond_stage_model.transformer." + k: v for k, v in text_sd.items()})

    # The published converters must give back exactly the diffusers state dicts.
    assert_same(convert_ldm_unet_checkpoint(dict(ldm), unet_cfg), unet_sd, "unet")
    assert_same(convert_ldm_vae_checkpoint(dict(ldm), vae_cfg), vae_sd, "vae")
    assert_same(convert_ldm_clip_checkpoint(dict(ldm)), text_sd, "text")

    # What real checkpoints also carry, which a loader must skip.
    ldm["model_ema.decay"] = torch.tensor(0.9999)
    ldm["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]

    save_file(unet_sd, os.path.join(out_dir, "unet.safetensors"))
    save_file(vae_sd, os.path.join(out_dir, "vae.safetensors"))
    save_file(text_sd, os.path.join(out_dir, "text_encoder.safetensors"))
    save_file({k: v.contiguous() for k, v in ldm.items()}, os.path.join(out_dir, "ldm.safetensors"))
    old = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v.contiguous()
        for k, v in ldm.items()
    }
    save_file(old, os.path.join(out_dir, "ldm_old_clip.safetensors"))
    print(f"unet {len(unet_sd)} vae {len(vae_sd)} text {len(text_sd)} ldm {len(ldm)}")


if __name__ == "__main__":
    main()
