"""Reference outputs of the CLIP models and IP-Adapter projections for the parity tests.

usage: clip_models.py DIR
DIR holds what the Rust test wrote: text/ (CLIPTextModel), vision/ and vision_g/
(CLIPVisionModelWithProjection, ViT-H- and ViT-bigG-shaped), clip/ (CLIPModel),
adapter-*.safetensors (flat IP-Adapter files; adapter-g-* read vision_g), inputs.safetensors (ids [B,77] int64, pixels [B,3,224,224]). Writes DIR/ref.safetensors.
Models run in fp32 on the CPU with transformers' / diffusers' own code.
"""
import glob
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import CLIPImageProcessor, CLIPModel, CLIPTextModel, CLIPVisionModelWithProjection
from diffusers.loaders.unet import UNet2DConditionLoadersMixin

d = sys.argv[1]
inputs = load_file(os.path.join(d, "inputs.safetensors"))
ids, pixels = inputs["ids"], inputs["pixels"]
out = {}
with torch.no_grad():
    text = CLIPTextModel.from_pretrained(os.path.join(d, "text")).eval()
    t = text(input_ids=ids)
    out["text.last_hidden_state"] = t.last_hidden_state
    out["text.pooled"] = t.pooler_output

    enc = CLIPVisionModelWithProjection.from_pretrained(os.path.join(d, "vision")).eval()
    v = enc(pixel_values=pixels, output_hidden_states=True)
    out["vision.image_embeds"] = v.image_embeds
    out["vision.penultimate"] = v.hidden_states[-2]
    out["vision.last_hidden_state"] = v.last_hidden_state
    assert len(v.hidden_states) == enc.config.num_hidden_layers + 1

    clip = CLIPModel.from_pretrained(os.path.join(d, "clip")).eval()
    out["clip.text_embeds"] = clip.get_text_features(input_ids=ids).pooler_output
    out["clip.image_embeds"] = clip.get_image_features(pixel_values=pixels).pooler_output

    # vision_g/: the ViT-bigG-shaped encoder (CLIPVisionModelWithProjection at other widths).
    enc_g = CLIPVisionModelWithProjection.from_pretrained(os.path.join(d, "vision_g")).eval()
    vg = enc_g(pixel_values=pixels, output_hidden_states=True)
    out["vision_g.image_embeds"] = vg.image_embeds
    out["vision_g.penultimate"] = vg.hidden_states[-2]

    # The "no image" inputs as diffusers' StableDiffusionPipeline.encode_image makes them, and
    # ComfyUI's black image through the CLIPImageProcessor.
    classes = {}
    black = CLIPImageProcessor()(Image.fromarray(np.zeros((224, 224, 3), np.uint8)), return_tensors="pt").pixel_values
    # adapter-g-*: on vision_g; the others on vision.
    for path in sorted(glob.glob(os.path.join(d, "adapter-*.safetensors"))):
        name = os.path.basename(path)[: -len(".safetensors")]
        e, o = (enc_g, vg) if name.startswith("adapter-g-") else (enc, v)
        zero = e(torch.zeros_like(pixels[:1]), output_hidden_states=True).hidden_states[-2]
        vb = e(black, output_hidden_states=True)
        flat = load_file(path)
        sd = {k[len("image_proj."):]: w for k, w in flat.items() if k.startswith("image_proj.")}
        proj = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(None, sd, low_cpu_mem_usage=False).eval()
        classes[name] = type(proj).__name__
        # ImageProjection reads image_embeds; the Resampler and the full-face MLP hidden states
        # (diffusers' encode_image: output_hidden_states = not ImageProjection).
        if type(proj).__name__ != "ImageProjection":
            out[f"{name}.tokens"] = proj(o.hidden_states[-2])
            out[f"{name}.no_image"] = proj(zero)
            out[f"{name}.black"] = proj(vb.hidden_states[-2])
        else:
            out[f"{name}.tokens"] = proj(o.image_embeds)
            out[f"{name}.no_image"] = proj(torch.zeros_like(o.image_embeds[:1]))
            out[f"{name}.black"] = proj(vb.image_embeds)
save_file({k: x.contiguous().float() for k, x in out.items()}, os.path.join(d, "ref.safetensors"))
# The diffusers class each adapter file became (its loader's choice from the keys).
json.dump(classes, open(os.path.join(d, "classes.json"), "w"))
