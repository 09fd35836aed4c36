"""Reference CLIP preprocessing of real photographs for the parity test.

usage: clip_preprocess.py DIR
       clip_preprocess.py --data-dir   (prints the folder of scikit-image's bundled photographs)
DIR/images.json lists image files; DIR/vision is a CLIPVisionModelWithProjection. Writes
DIR/ref.safetensors: for image i, `pixels.i` from transformers' CLIPImageProcessor (the
default torchvision backend, as diffusers' feature_extractor uses it), `pixels_pil.i` from
CLIPImageProcessorPil (PIL resize, for the record) and `embeds.i` = image_embeds of `pixels.i`.
"""
import json
import os
import sys

if sys.argv[1] == "--data-dir":
    import skimage

    print(os.path.join(os.path.dirname(skimage.__file__), "data"))
    sys.exit(0)

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

d = sys.argv[1]
files = json.load(open(os.path.join(d, "images.json")))
tv, pil = CLIPImageProcessor(), CLIPImageProcessorPil()
enc = CLIPVisionModelWithProjection.from_pretrained(os.path.join(d, "vision")).eval()
out = {}
with torch.no_grad():
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        px = tv(img, return_tensors="pt").pixel_values
        out[f"pixels.{i}"] = px
        out[f"pixels_pil.{i}"] = pil(img, return_tensors="pt").pixel_values
        out[f"embeds.{i}"] = enc(pixel_values=px).image_embeds
save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(d, "ref.safetensors"))
