"""Reference derived images: ComfyUI_IPAdapter_plus's noise formulas, applied with torch and
torchvision as the nodes apply them, for the parity test of `negimg`'s derived images.

usage: derive_noise.py DIR
DIR/recipes.json lists {"source": PNG path or null, "noise", "strength", "blur"}. Writes
DIR/ref.safetensors with `image.i`: float [1, 224, 224, 3] (ComfyUI's IMAGE layout) of
recipe i, before any rounding to 8 bits.

- IPAdapterNoise (fade, dissolve, gaussian, shuffle): the node's transforms.v2 crop and
  resize, the seed int(sum) % 1000000007, the noise, clamp(0, 1), then gaussian_blur.
- legacy: the older IPAdapterApply's `noise` option (transforms v1, seed 0), not clamped.
- mean_color, grayscale, blur: the source blended towards a control image by strength.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T1
import torchvision.transforms.v2 as T2
import torchvision.transforms.v2.functional as F2
from PIL import Image
from safetensors.torch import save_file

# One thread: the seed is a float sum, whose value depends on how a reduction is split.
torch.set_num_threads(1)


def load_image(path):
    """As ComfyUI's LoadImage: RGB, float32 u8 / 255, [1, H, W, 3]."""
    array = np.array(Image.open(path).convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(array)[None,]


def square_224(image):
    """The node's centre crop and bicubic resize to 224 (transforms.v2)."""
    side = min(image.shape[1], image.shape[2])
    steps = T2.Compose([
        T2.CenterCrop(side),
        T2.Resize((224, 224), interpolation=T2.InterpolationMode.BICUBIC, antialias=True),
    ])
    return steps(image.permute([0, 3, 1, 2])).permute([0, 2, 3, 1])


def node_noise(image, kind, strength, blur):
    """IPAdapterNoise: `image` is None (a black 224 image) or a LoadImage tensor."""
    image = torch.zeros([1, 224, 224, 3]) if image is None else square_224(image)
    torch.manual_seed(int(torch.sum(image).item()) % 1000000007)
    if kind == "fade":
        out = image * (1 - strength) + torch.rand_like(image) * strength
    elif kind == "dissolve":
        keep = (torch.rand_like(image) < strength).float()
        fresh = torch.rand_like(image)
        out = image * (1 - keep) + fresh * keep
    elif kind == "gaussian":
        out = image + torch.randn_like(image) * strength
    elif kind == "shuffle":
        warp = T2.Compose([
            T2.ElasticTransform(alpha=75.0, sigma=(1 - strength) * 3.5),
            T2.RandomVerticalFlip(p=1.0),
            T2.RandomHorizontalFlip(p=1.0),
        ])
        image = warp(image.permute([0, 3, 1, 2])).permute([0, 2, 3, 1])
        amount = torch.randn_like(image) * (strength * 0.75)
        out = image * (1 - amount) + amount
    else:
        raise SystemExit(f"unknown node kind {kind}")
    return final_blur(torch.clamp(out, 0, 1), blur)


def legacy_noise(image, strength, blur):
    """The older node's image_add_noise(image, noise), torchvision v1 transforms."""
    image = torch.zeros([1, 224, 224, 3]) if image is None else image
    x = image.permute([0, 3, 1, 2])
    torch.manual_seed(0)
    steps = T1.Compose([
        T1.CenterCrop(min(x.shape[2], x.shape[3])),
        T1.Resize((224, 224), interpolation=T1.InterpolationMode.BICUBIC, antialias=True),
        T1.ElasticTransform(alpha=75.0, sigma=strength * 3.5),
        T1.RandomVerticalFlip(p=1.0),
        T1.RandomHorizontalFlip(p=1.0),
    ])
    x = steps(x).permute([0, 2, 3, 1])
    return final_blur(x + (0.25 * (1 - strength) + 0.05) * torch.randn_like(x), blur)


def control(image, kind, strength, blur):
    """mean_color, grayscale, blur: blend towards a control image; no randomness."""
    image = torch.zeros([1, 224, 224, 3]) if image is None else square_224(image)
    if kind == "mean_color":
        target = image.mean(dim=(1, 2), keepdim=True)
    elif kind == "grayscale":
        target = F2.rgb_to_grayscale(image.permute([0, 3, 1, 2]), num_output_channels=3)
        target = target.permute([0, 2, 3, 1])
    elif kind == "blur":
        target = F2.gaussian_blur(image.permute([0, 3, 1, 2]), blur | 1).permute([0, 2, 3, 1])
    else:
        raise SystemExit(f"unknown control kind {kind}")
    out = torch.clamp(image * (1 - strength) + target * strength, 0, 1)
    return out if kind == "blur" else final_blur(out, blur)


def final_blur(image, blur):
    """The node's last step: an odd kernel, torchvision's default sigma."""
    if blur <= 0:
        return image
    k = blur + 1 if blur % 2 == 0 else blur
    return F2.gaussian_blur(image.permute([0, 3, 1, 2]), k).permute([0, 2, 3, 1])


def main():
    d = sys.argv[1]
    recipes = json.load(open(os.path.join(d, "recipes.json")))
    out = {}
    for i, r in enumerate(recipes):
        image = None if r["source"] is None else load_image(r["source"])
        kind, strength, blur = r["noise"], float(r["strength"]), int(r["blur"])
        if kind in ("fade", "dissolve", "gaussian", "shuffle"):
            result = node_noise(image, kind, strength, blur)
        elif kind == "legacy":
            result = legacy_noise(image, strength, blur)
        else:
            result = control(image, kind, strength, blur)
        assert result.shape == (1, 224, 224, 3) and not math.isnan(result.sum().item())
        out[f"image.{i}"] = result.contiguous().float()
    save_file(out, os.path.join(d, "ref.safetensors"))


main()
