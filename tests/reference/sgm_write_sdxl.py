"""Writes a diffusers SDXL pipeline folder as one single-file checkpoint in the SGM layout of
sd_xl_base_1.0.safetensors, for tests/sdxl_single_file.rs.

usage: sgm_write_sdxl.py PIPELINE_DIR OUT.safetensors

OUT.safetensors holds the folder's tensors as they are stored, under SGM names:
`model.diffusion_model.*` (the UNet, its `add_embedding` as `label_emb.0.{0,2}`),
`first_stage_model.*` (the VAE), `conditioner.embedders.0.transformer.text_model.*` (the CLIP
ViT-L text encoder, transformers' layout) and `conditioner.embedders.1.model.*` (the second
text encoder in open_clip's layout: q/k/v fused into `attn.in_proj_weight`/`in_proj_bias`,
`text_projection` as the matrix P of `x @ P`, `positional_embedding`, `token_embedding`,
`ln_final`, `transformer.resblocks.*`), plus what real checkpoints also carry (an EMA scalar,
position_ids, open_clip's logit_scale). OUT.configs/ is the folder without its weights (its
configs, tokenizers and scheduler), negimg's `<name>.configs/` and diffusers' `config=`.

The UNet and VAE names come from ldm_write_tiny.py; the open_clip names are the reverse of
diffusers' `convert_open_clip_checkpoint`. None is taken on trust: diffusers' own converters
(`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`,
`convert_open_clip_checkpoint`) must give the folder's tensors back exactly, and so must
`StableDiffusionXLPipeline.from_single_file(OUT, config=OUT.configs, local_files_only=True)`
(every component's state dict, offline).
"""
import json
import os
import shutil
import sys
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ldm_write_tiny import assert_same, unet_to_ldm, vae_to_ldm

TEXT = "conditioner.embedders.0.transformer."
OPEN_CLIP = "conditioner.embedders.1.model."

# transformers CLIPTextModelWithProjection -> open_clip text tower, outside the layers.
OPEN_CLIP_TOP = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
# ... and inside `text_model.encoder.layers.{i}.` -> `transformer.resblocks.{i}.`.
OPEN_CLIP_LAYER = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


def with_text_model(sd):
    """Files on the hub (and transformers < 5) name CLIP's tensors `text_model.*`."""
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
            for k, v in sd.items() if not k.endswith("position_ids")}


def to_open_clip(sd):
    out = {}
    layers = {}
    for key, value in sd.items():
        if key in OPEN_CLIP_TOP:
            out[OPEN_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        else:
            rest = key[len("text_model.encoder.layers."):]
            i, name = rest.split(".", 1)
            if name.startswith("self_attn.") and name.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                _, proj, param = name.split(".")
                layers.setdefault((i, param), {})[proj[0]] = value
                continue
            prefix = next(p for p in OPEN_CLIP_LAYER if name.startswith(p))
            out[f"transformer.resblocks.{i}.{OPEN_CLIP_LAYER[prefix]}{name[len(prefix):]}"] = value
    for (i, param), qkv in layers.items():
        fused = torch.cat([qkv["q"], qkv["k"], qkv["v"]]).contiguous()
        out[f"transformer.resblocks.{i}.attn.in_proj_{param}"] = fused
    return {OPEN_CLIP + k: v for k, v in out.items()}


def part(folder, name, weights):
    config = json.load(open(os.path.join(folder, name, "config.json")))
    return load_file(os.path.join(folder, name, weights)), config


def main():
    folder, out = sys.argv[1:3]
    configs = os.path.splitext(out)[0] + ".configs"
    shutil.rmtree(configs, ignore_errors=True)
    shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))

    unet_sd, unet_cfg = part(folder, "unet", "diffusion_pytorch_model.safetensors")
    vae_sd, vae_cfg = part(folder, "vae", "diffusion_pytorch_model.safetensors")
    text_sd = with_text_model(part(folder, "text_encoder", "model.safetensors")[0])
    text2_sd = with_text_model(part(folder, "text_encoder_2", "model.safetensors")[0])

    sgm = {}
    sgm.update(unet_to_ldm(unet_sd, SimpleNamespace(**unet_cfg)))
    sgm.update(vae_to_ldm(vae_sd, SimpleNamespace(**vae_cfg)))
    sgm.update({TEXT + k: v for k, v in text_sd.items()})
    sgm.update(to_open_clip(text2_sd))

    # The published converters must give back exactly the folder's state dicts.
    assert_same(convert_ldm_unet_checkpoint(dict(sgm), unet_cfg), unet_sd, "unet")
    assert_same(convert_ldm_vae_checkpoint(dict(sgm), vae_cfg), vae_sd, "vae")
    assert_same(convert_ldm_clip_checkpoint({k: v for k, v in sgm.items() if k.startswith(TEXT)}),
                text_sd, "text_encoder")
    # The model argument is only read when the file has no text_projection.
    assert_same(convert_open_clip_checkpoint(None, dict(sgm), prefix=OPEN_CLIP), text2_sd, "text_encoder_2")

    # What real checkpoints also carry, which a loader must skip.
    sgm["model_ema.decay"] = torch.tensor(0.9999)
    sgm[TEXT + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    sgm[OPEN_CLIP + "logit_scale"] = torch.tensor(4.6052)
    save_file({k: v.contiguous() for k, v in sgm.items()}, out)

    # diffusers' single-file loader, offline, with the configs folder: the folder's weights.
    pipe = StableDiffusionXLPipeline.from_single_file(out, config=configs, local_files_only=True)
    for name, want in [("unet", unet_sd), ("vae", vae_sd), ("text_encoder", text_sd),
                       ("text_encoder_2", text2_sd)]:
        got = getattr(pipe, name).state_dict()
        if name.startswith("text_encoder"):
            got = with_text_model(got)
        assert_same(got, want, f"from_single_file {name}")
    index = json.load(open(os.path.join(folder, "model_index.json")))
    assert pipe.config.force_zeros_for_empty_prompt == index.get("force_zeros_for_empty_prompt", True)
    print(f"unet {len(unet_sd)} vae {len(vae_sd)} text {len(text_sd)} text_2 {len(text2_sd)} sgm {len(sgm)}")


if __name__ == "__main__":
    main()
