"""transformers' side of examples/bench_scoring.rs: images/s of CLIPModel.get_image_features
and Dinov2Model's pooler_output on the same images (decoding and preprocessing included),
batches of 32 as negimg, fp32 on the CPU.

usage: bench_scoring_reference.py OUT_DIR
"""
import glob
import os
import sys
import time

import torch
from PIL import Image
from transformers import BitImageProcessor, CLIPImageProcessor, CLIPModel, Dinov2Model

out = sys.argv[1]
paths = sorted(glob.glob(os.path.join(out, "images", "*.png")))
print("threads:", torch.get_num_threads())


def run(name, model, processor, embed):
    def once(ps):
        with torch.no_grad():
            for i in range(0, len(ps), 32):
                imgs = [Image.open(p).convert("RGB") for p in ps[i:i + 32]]
                embed(model, processor(images=imgs, return_tensors="pt").pixel_values)

    once(paths[:2])
    start = time.perf_counter()
    once(paths)
    s = time.perf_counter() - start
    print(f"transformers {name}: {len(paths)} images in {s:.2f} s = {len(paths) / s:.3f} images/s")


clip_dir = os.path.join(out, "clip-vit-l14")
run("clip", CLIPModel.from_pretrained(clip_dir).eval(), CLIPImageProcessor.from_pretrained(clip_dir),
    lambda m, px: m.get_image_features(pixel_values=px))
dino_dir = os.path.join(out, "dinov2-base")
run("dino", Dinov2Model.from_pretrained(dino_dir).eval(), BitImageProcessor.from_pretrained(dino_dir),
    lambda m, px: m(pixel_values=px).pooler_output)
