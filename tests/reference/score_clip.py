"""Reference CLIP metrics of a run folder, computed with transformers.

usage: score_clip.py RUN_DIR SCORER_DIR METRICS_JSON OUT.safetensors
Reads RUN_DIR/records.csv and RUN_DIR/run.json as negimg writes them, scores every done
image with transformers' CLIPModel + CLIPImageProcessor + CLIPTokenizer loaded from
SCORER_DIR, and writes `metrics` [N, M]: one row per done record (records.csv order), one
column per name in METRICS_JSON (a JSON list: clip_i_pos, clip_i_neg, subtraction,
clip_i_base, clip_t_K, clip_t_cos_K, clip_div). NaN where a metric is undefined.
clip_div: mean 1 - cos to the other done images of the same condition (all axes but the seed).
mad_base / ssim_base: mean |pixel - baseline pixel| on 0..1 (RGB) and scikit-image's SSIM
(Gaussian 11x11, sigma 1.5, data_range 255) of the luma, against the baseline image.
"""
import csv
import json
import math
import os
import sys

import torch
from PIL import Image
from safetensors.torch import save_file
import numpy as np
from skimage.metrics import structural_similarity
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

run_dir, scorer_dir, metric_names, out_path = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
info = json.load(open(os.path.join(run_dir, "run.json")))
with open(os.path.join(run_dir, "records.csv"), newline="") as f:
    records = list(csv.DictReader(f))
done = [r for r in records if r["status"] == "done"]

model = CLIPModel.from_pretrained(scorer_dir).eval()
processor = CLIPImageProcessor.from_pretrained(scorer_dir)
tokenizer = CLIPTokenizer.from_pretrained(scorer_dir)


def features(out):
    # transformers 5 returns a model output whose pooler_output is the projected embedding.
    return out if torch.is_tensor(out) else out.pooler_output


def unit(x):
    x = x.double()
    return x / x.norm(dim=-1, keepdim=True)


def image_embeds(paths):
    imgs = [Image.open(p).convert("RGB") for p in paths]
    px = processor(images=imgs, return_tensors="pt").pixel_values
    return unit(features(model.get_image_features(pixel_values=px)))


with torch.no_grad():
    inputs = {name: image_embeds([os.path.join(run_dir, f)])[0] for name, f in info["images"].items()}
    cells = image_embeds([os.path.join(run_dir, r["file"]) for r in done])
    targets = info["scoring"]["targets"]
    if targets:
        tok = tokenizer(targets, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        texts = unit(features(model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)))

# The negative=none cell with the same seed and otherwise equal parameters (the negative
# text and image do not change a none cell).
same = ["seed", "prompt", "positive_image", "adapter", "weight", "start", "end", "neg_weight",
        "neg_start", "neg_end", "cfg", "steps", "scheduler", "width", "height", "no_image"]
base_index = {}
for i, r in enumerate(done):
    if r["negative"] == "none":
        base_index.setdefault(tuple(r[k] for k in same), i)

axes = [a["name"] for a in info["axes"] if a["name"] != "seed"]
groups = {}
for i, r in enumerate(done):
    groups.setdefault(tuple(r[a] for a in axes), []).append(i)

rows = []
for i, r in enumerate(done):
    e = cells[i]

    def cos_to(own, fallback):
        name = own or fallback
        return float(e @ inputs[name]) if name in inputs else math.nan

    pos = cos_to(r["positive_image"], info["scoring"].get("positive_reference"))
    neg = cos_to(r["negative_image"], info["scoring"].get("negative_reference"))
    b = base_index.get(tuple(r[k] for k in same))
    values = {"clip_i_pos": pos, "clip_i_neg": neg, "subtraction": pos - neg,
              "clip_i_base": float(e @ cells[b]) if b is not None else math.nan}
    for k in range(len(targets)):
        c = float(e @ texts[k])
        values[f"clip_t_{k + 1}"] = 100.0 * max(c, 0.0)
        values[f"clip_t_cos_{k + 1}"] = c
    if b is not None:
        x = np.asarray(Image.open(os.path.join(run_dir, r["file"])).convert("RGB"), dtype=np.float64)
        y = np.asarray(Image.open(os.path.join(run_dir, done[b]["file"])).convert("RGB"), dtype=np.float64)
        luma = np.array([0.299, 0.587, 0.114])
        values["mad_base"] = float(np.abs(x - y).mean() / 255.0)
        change = np.abs(x @ luma - y @ luma) / 255.0
        total = change.sum()
        p = change.ravel()[change.ravel() > 0] / total if total > 0 else None
        # Entropy of the luma change map, normalised by log(pixels) (README, "Change maps").
        values["change_entropy"] = (float(-(p * np.log(p)).sum() / np.log(change.size))
                                    if p is not None else math.nan)
        values["ssim_base"] = float(structural_similarity(x @ luma, y @ luma, gaussian_weights=True, sigma=1.5,
                                                          use_sample_covariance=False, data_range=255.0))
    else:
        values["mad_base"] = values["ssim_base"] = values["change_entropy"] = math.nan
    others = [j for j in groups[tuple(r[a] for a in axes)] if j != i]
    values["clip_div"] = (sum(1.0 - float(e @ cells[j]) for j in others) / len(others)) if others else math.nan
    # No region mask in the runs this reference scores (tests/parity_score.rs).
    assert info["scoring"].get("region") is None
    values["change_in_region"] = values["change_out_region"] = math.nan
    rows.append([values[m] for m in metric_names])

save_file({"metrics": torch.tensor(rows, dtype=torch.float64)}, out_path)
print(f"scored {len(done)} images")
