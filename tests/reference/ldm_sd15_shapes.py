"""The diffusers/transformers tensor names and shapes of SD1.5's UNet, VAE and text encoder,
built on the meta device (no memory) from config files that negimg wrote, for the test that
configs inferred from an SD1.5 checkpoint's shapes are exactly negimg's SD1.5 configs (and,
given TEXT2.json, SDXL base's second text encoder, a CLIPTextModelWithProjection, for the
same test on SDXL).

usage: ldm_sd15_shapes.py UNET.json VAE.json TEXT.json OUT.json [TEXT2.json]
out: {"unet": {name: shape}, "vae": {...}, "text_encoder": {...}[, "text_encoder_2": {...}]}
"""
import json
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

unet_path, vae_path, text_path, out_path = sys.argv[1:5]
with torch.device("meta"):
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(unet_path))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(vae_path))
    text = CLIPTextModel(CLIPTextConfig.from_json_file(text_path))


def shapes(model, prefix=""):
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        # Checkpoints name the text encoder's tensors `text_model.*` (transformers < 5 did too).
        if prefix and not k.startswith(prefix):
            k = prefix + k
        out[k] = list(v.shape)
    return out


out = {"unet": shapes(unet), "vae": shapes(vae), "text_encoder": shapes(text, "text_model.")}
if len(sys.argv) > 5:
    with torch.device("meta"):
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_json_file(sys.argv[5]))
    out["text_encoder_2"] = shapes(text_2)
json.dump(out, open(out_path, "w"))
