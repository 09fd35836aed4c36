"""Reference for tests/patch_change_maps.rs: patch-token change maps with transformers, and
the luma change maps of x̂₀ traces with numpy.

Usage: patch_change_ref.py CASES.json OUT.json
CASES: {"patch": [{"encoder": "clip"|"dino", "model": dir, "image": png, "baseline": png,
                   "npy": negimg's map}],
        "luma": [{"image": png, "baseline": png, "npy": negimg's map}]}
patch: both images through the folder's image processor (CLIPImageProcessor or
BitImageProcessor) and model (CLIPModel's vision_model or Dinov2Model); the grid is
1 - cosine_similarity of last_hidden_state[:, 1:] (float64), reshaped to the square patch
grid; the map's non-NaN part must be one square, which is compared with
F.interpolate(grid (float32), size=(side, side), mode="bilinear", align_corners=False).
Writes per case the grid, the square (left, top, side) and the largest differences; and the
scalars of negimg's map (its non-NaN pixels: the crop) with numpy: the normalized entropy and
the share of its mass inside the case's "mask" resized to the map by nearest (change_map_ref).
"""
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BitImageProcessor, CLIPImageProcessor, CLIPModel, Dinov2Model

from change_map_ref import luma, nearest, rgb

models = {}


def encoder(kind, folder):
    if (kind, folder) not in models:
        if kind == "clip":
            model = CLIPModel.from_pretrained(folder).eval()
            models[(kind, folder)] = (CLIPImageProcessor.from_pretrained(folder), model.vision_model)
        else:
            model = Dinov2Model.from_pretrained(folder).eval()
            models[(kind, folder)] = (BitImageProcessor.from_pretrained(folder), model)
    return models[(kind, folder)]


def patch_case(c):
    processor, model = encoder(c["encoder"], c["model"])
    imgs = [Image.open(c[k]).convert("RGB") for k in ("image", "baseline")]
    px = processor(images=imgs, return_tensors="pt").pixel_values
    with torch.no_grad():
        tokens = model(pixel_values=px).last_hidden_state[:, 1:].double()
    d = 1.0 - F.cosine_similarity(tokens[0], tokens[1], dim=-1)
    g = int(round(d.numel() ** 0.5))
    grid = d.view(g, g)
    ours = np.load(c["npy"])
    inside = ~np.isnan(ours)
    ys, xs = np.nonzero(inside)
    top, left = int(ys.min()), int(xs.min())
    side = int(ys.max()) - top + 1
    assert int(xs.max()) - left + 1 == side, "the map's defined part is not a square"
    assert inside.sum() == side * side, "NaN inside the crop"
    up = F.interpolate(grid.float()[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    region = ours[top:top + side, left:left + side].astype(np.float64)
    entropy, inside = None, None  # undefined without change (JSON has no NaN)
    m = ours.astype(np.float64)
    total = m[~np.isnan(m)].sum()
    if total > 0:
        p = m[~np.isnan(m)] / total
        p = p[p > 0]
        entropy = float(-(p * np.log(p)).sum() / np.log((~np.isnan(m)).sum()))
        mask = rgb(c["mask"])
        assert set(np.unique(mask)) <= {0.0, 255.0}
        under = nearest(mask[..., 0] == 255.0, *m.shape) & ~np.isnan(m)
        inside = float(m[under].sum() / total)
    return {
        "entropy": entropy,
        "in_region": inside,
        "grid": grid.tolist(),
        "crop": [left, top, side],
        "shape": list(ours.shape),
        "map_max_diff": float(np.abs(region - up.double().numpy()).max()),
        "max": float(grid.max()),
    }


def luma_case(c):
    m = np.abs(luma(rgb(c["image"])) - luma(rgb(c["baseline"]))) / 255.0
    ours = np.load(c["npy"])
    return {"shape": list(ours.shape), "max_diff": float(np.abs(ours.astype(np.float64) - m).max()),
            "max": float(m.max())}


def main():
    cases = json.load(open(sys.argv[1]))
    out = {"patch": [patch_case(c) for c in cases["patch"]], "luma": [luma_case(c) for c in cases["luma"]]}
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
