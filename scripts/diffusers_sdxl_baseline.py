"""The peer of `negimg bench --models DIR` on an SDXL model set: diffusers'
StableDiffusionXLPipeline with the same IP-Adapter file, the same work per rep (a positive and a
negative image encoded, one pipeline call for the cell, its seeds as the batch, DDIM, CFG 7.5,
VAE decode), generation time only (loading and one warm-up rep excluded). Prints one JSON line
with images_per_s and s_per_step, as `negimg bench` does.

usage (same files, same sitting):
  negimg models init-random --preset sdxl --out models/sdxl
  negimg --device cpu bench --dtype fp32 --models models/sdxl --size 256 --steps 4 --reps 2
  python scripts/diffusers_sdxl_baseline.py --models models/sdxl --device cpu --dtype fp32 \
      --size 256 --steps 4 --reps 2
"""

import argparse, json, statistics, time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionXLPipeline
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

ADAPTER_FILES = {"base": "ip-adapter_sdxl_vit-h.safetensors",
                 "plus": "ip-adapter-plus_sdxl_vit-h.safetensors"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, type=Path, help="a `negimg models init-random --preset sdxl` folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=DTYPES)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=1, help="seeds of the one cell")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--adapter", default="base", choices=ADAPTER_FILES)
    return p.parse_args()


def main():
    a = args()
    dtype, device = DTYPES[a.dtype], torch.device(a.device)
    encoder = CLIPVisionModelWithProjection.from_pretrained(a.models / "image_encoder", torch_dtype=dtype)
    pipe = StableDiffusionXLPipeline.from_pretrained(a.models / "pipeline", image_encoder=encoder,
                                                     torch_dtype=dtype)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.load_ip_adapter(str(a.models), subfolder="", weight_name=ADAPTER_FILES[a.adapter],
                         image_encoder_folder=None)
    pipe.set_ip_adapter_scale(1.0)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    processor = CLIPImageProcessor()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)) for _ in range(2)]

    def embeds(image):
        pixels = processor(images=image, return_tensors="pt").pixel_values.to(device, dtype)
        out = encoder(pixels, output_hidden_states=True)
        # base: the projected embedding, one token; plus: the penultimate hidden states.
        return out.image_embeds[:, None] if a.adapter == "base" else out.hidden_states[-2]

    def rep(i):
        start = time.perf_counter()
        with torch.no_grad():
            positive, negative = embeds(images[0]), embeds(images[1])
            seeds = [1000 * i + s for s in range(a.batch)]
            pipe(prompt="a house in winter", ip_adapter_image_embeds=[torch.cat([negative, positive])],
                 num_images_per_prompt=a.batch, num_inference_steps=a.steps, guidance_scale=a.cfg,
                 height=a.size, width=a.size, output_type="np",
                 generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    rep(0)  # warm-up
    times = [rep(i + 1) for i in range(a.reps)]
    median = statistics.median(times)
    print(json.dumps({"peer": "diffusers StableDiffusionXLPipeline", "models": str(a.models),
                      "device": a.device, "dtype": a.dtype, "size": a.size, "steps": a.steps,
                      "batch": a.batch, "adapter": a.adapter, "reps": a.reps,
                      "images_per_s": round(a.batch / median, 4),
                      "s_per_step": round(median / a.steps, 5),
                      "times_s": [round(t, 3) for t in times]}))


if __name__ == "__main__":
    main()
