"""Reference images from diffusers' StableDiffusionPipeline + IP-Adapter, for
tests/parity_pipeline.rs.

usage: pipeline_parity.py MODELS_DIR CASES.json OUT.safetensors
MODELS_DIR: a `negimg models init-random` folder. CASES.json: a list of
{name, prompt, uncond_prompt, pos_image, uncond_image (paths or null), adapter: base|plus,
 scheduler: ddim|euler|dpmpp_2m|dpmpp_2m_karras, steps, cfg, seed, size, no_image: reference|black,
 positive: {weight, start, end}, negative: {weight, start, end}}.
Image embeddings come from transformers' CLIPVisionModelWithProjection and CLIPImageProcessor
and enter the pipeline as ip_adapter_image_embeds=[cat([uncond, cond])]. The IP scale of each
CFG row (uncond, cond) at each step follows the window rule "step i of N is active iff
start <= i/N < end", set before step 0 and by callback_on_step_end after each step.
Writes `{name}.float` (the [0,1] image before 8-bit rounding, [3,H,W]) and `{name}.u8`.
"""
import json, os, sys
import numpy as np
import torch
from PIL import Image
from diffusers import (StableDiffusionPipeline, DDIMScheduler, EulerDiscreteScheduler,
                       DPMSolverMultistepScheduler)
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection, CLIPImageProcessor

torch.set_num_threads(2)
models, cases_path, out_path = sys.argv[1:4]
cases = json.load(open(cases_path))

encoder = CLIPVisionModelWithProjection.from_pretrained(os.path.join(models, "image_encoder")).eval()
processor = CLIPImageProcessor()


def load_pipe(adapter):
    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(models, "pipeline"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    name = {"base": "ip-adapter_sd15.safetensors", "plus": "ip-adapter-plus_sd15.safetensors"}[adapter]
    flat = load_file(os.path.join(models, name))
    sd = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, rest = key.split(".", 1)
        sd[head][rest] = value
    pipe.unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


pipes = {}
base_scheduler_config = None


class RowScale:
    """A per-row IP scale [2B,1,1] that IPAdapterAttnProcessor2_0 multiplies with."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, x):
        return self.t.to(x.dtype) * x
    __rmul__ = __mul__


def set_scales(pipe, uncond, cond):
    t = torch.tensor([uncond, cond], dtype=torch.float32).view(2, 1, 1)
    for proc in pipe.unet.attn_processors.values():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            proc.scale = [RowScale(t)]


def at(branch, i, n):
    return branch["weight"] if branch["start"] <= i / n < branch["end"] else 0.0


@torch.no_grad()
def embeds(path, adapter, no_image):
    if path is None and no_image == "reference":
        pixels = processor(images=Image.new("RGB", (224, 224)), return_tensors="pt").pixel_values
        if adapter == "base":
            return torch.zeros_like(encoder(pixels).image_embeds)[:, None]
        return encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2][:, None]
    img = Image.new("RGB", (224, 224)) if path is None else Image.open(path).convert("RGB")
    pixels = processor(images=img, return_tensors="pt").pixel_values
    out = encoder(pixels, output_hidden_states=True)
    return out.image_embeds[:, None] if adapter == "base" else out.hidden_states[-2][:, None]


out = {}
for c in cases:
    if c["adapter"] not in pipes:
        pipes[c["adapter"]] = load_pipe(c["adapter"])
    pipe = pipes[c["adapter"]]
    cfg = dict(pipe.scheduler.config) if base_scheduler_config is None else base_scheduler_config
    base_scheduler_config = cfg
    kind = c["scheduler"]
    if kind == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(cfg)
    elif kind == "euler":
        pipe.scheduler = EulerDiscreteScheduler.from_config(cfg)
    else:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=kind.endswith("karras"))
    n = c["steps"]
    pos, neg = c["positive"], c["negative"]
    # an explicit per-step [uncond, cond] schedule (to model the demo's defects) wins
    schedule = c.get("schedule") or [[at(neg, i, n), at(pos, i, n)] for i in range(n)]
    set_scales(pipe, *schedule[0])

    def callback(p, i, t, kwargs):
        if i + 1 < n:
            set_scales(p, *schedule[i + 1])
        return kwargs

    ip = torch.cat([embeds(c["uncond_image"], c["adapter"], c["no_image"]),
                    embeds(c["pos_image"], c["adapter"], c["no_image"])])
    image = pipe(prompt=c["prompt"], negative_prompt=c["uncond_prompt"], ip_adapter_image_embeds=[ip],
                 num_inference_steps=n, guidance_scale=c["cfg"], height=c["size"], width=c["size"],
                 generator=torch.Generator("cpu").manual_seed(c["seed"]), output_type="pt",
                 callback_on_step_end=callback).images
    out[c["name"] + ".float"] = image[0].float().contiguous()
    u8 = (image.permute(0, 2, 3, 1).float().numpy() * 255).round().astype("uint8")
    out[c["name"] + ".u8"] = torch.from_numpy(u8[0]).permute(2, 0, 1).long().contiguous()
save_file(out, out_path)
