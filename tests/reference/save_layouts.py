"""Models saved as today's libraries save them, and transformers' outputs on them.

usage: save_layouts.py DIR TINY
DIR holds text/, vision/, clip/ (tiny random models written by Rust) and inputs.safetensors
(ids [B,77] int64, pixels [B,3,S,S]); TINY is negimg's tiny model set. Writes into DIR:
  text-saved/    CLIPTextModel.save_pretrained of a model built from its config (transformers 5:
                 keys without `text_model.`); likewise vision-saved/ and clip-saved/
  text-bin/      config.json + pytorch_model.bin (torch.save of the state dict, older releases)
  vision-saved/  CLIPVisionModelWithProjection.save_pretrained (`vision_model.` prefix)
  vision-bare/   the same weights with the `vision_model.` prefix removed
  vision-bin/    config.json + pytorch_model.bin
  clip-saved/    CLIPModel.save_pretrained;  clip-bin/  config.json + pytorch_model.bin
  pipe-saved/    StableDiffusionPipeline.save_pretrained of TINY/pipeline (safetensors), its
                 text encoder rebuilt from the config as from_single_file makes it
  pipe-bin/      the same with safe_serialization=False (unet/, vae/ .bin), its text encoder as
                 pytorch_model.bin (transformers 5 writes safetensors whatever the flag)
  ref.safetensors  the outputs of the transformers models loaded back from the *-saved folders
"""
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPModel, CLIPTextModel, CLIPVisionModelWithProjection
from diffusers import StableDiffusionPipeline

d, tiny = sys.argv[1], sys.argv[2]
inputs = load_file(os.path.join(d, "inputs.safetensors"))
ids, pixels = inputs["ids"], inputs["pixels"]


def save_bin(model, folder):
    os.makedirs(folder, exist_ok=True)
    model.config.to_json_file(os.path.join(folder, "config.json"))
    torch.save(model.state_dict(), os.path.join(folder, "pytorch_model.bin"))


def fresh(model):
    """The model built from its config, as from_single_file or a training script makes it:
    transformers 5 saves such a model in its own layout (a loaded one keeps the file's)."""
    new = type(model)(model.config)
    new.load_state_dict(model.state_dict())
    return new.eval()


out = {}
with torch.no_grad():
    for name, cls in [("text", CLIPTextModel), ("vision", CLIPVisionModelWithProjection), ("clip", CLIPModel)]:
        model = fresh(cls.from_pretrained(os.path.join(d, name)))
        model.save_pretrained(os.path.join(d, f"{name}-saved"))
        save_bin(model, os.path.join(d, f"{name}-bin"))
    keys = load_file(os.path.join(d, "text-saved", "model.safetensors")).keys()
    assert not any(k.startswith("text_model.") for k in keys), "expected transformers 5's layout"
    bare = os.path.join(d, "vision-bare")
    os.makedirs(bare, exist_ok=True)
    shutil.copy(os.path.join(d, "vision-saved", "config.json"), bare)
    sd = load_file(os.path.join(d, "vision-saved", "model.safetensors"))
    save_file({k.removeprefix("vision_model."): v for k, v in sd.items()}, os.path.join(bare, "model.safetensors"))

    text = CLIPTextModel.from_pretrained(os.path.join(d, "text-saved")).eval()
    out["text.last_hidden_state"] = text(input_ids=ids).last_hidden_state
    enc = CLIPVisionModelWithProjection.from_pretrained(os.path.join(d, "vision-saved")).eval()
    out["vision.image_embeds"] = enc(pixel_values=pixels).image_embeds
    clip = CLIPModel.from_pretrained(os.path.join(d, "clip-saved")).eval()
    out["clip.text_embeds"] = clip.get_text_features(input_ids=ids).pooler_output
    out["clip.image_embeds"] = clip.get_image_features(pixel_values=pixels).pooler_output

    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(tiny, "pipeline"), safety_checker=None, requires_safety_checker=False
    )
    pipe.text_encoder = fresh(pipe.text_encoder)
    pipe.save_pretrained(os.path.join(d, "pipe-saved"))
    pipe.save_pretrained(os.path.join(d, "pipe-bin"), safe_serialization=False)
    te = os.path.join(d, "pipe-bin", "text_encoder")
    for f in os.listdir(te):
        if f.endswith(".safetensors"):
            os.remove(os.path.join(te, f))
    torch.save(pipe.text_encoder.state_dict(), os.path.join(te, "pytorch_model.bin"))
    out["pipe.text_encoder"] = pipe.text_encoder(input_ids=ids).last_hidden_state
save_file({k: x.contiguous().float() for k, x in out.items()}, os.path.join(d, "ref.safetensors"))
