"""Reference images for NegToMe (tests/parity_negtome.rs), on diffusers' UNet, VAE and DDIM
with a hand-written sampling loop and attention processors that apply the merge.

usage: negtome_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, method: uncond|negtome, adapter: base|plus, prompt,
 uncond_prompt, pos_image, neg_image (paths), steps, cfg, seed, size, weight, neg_weight,
 alpha, threshold, t_min, t_max, noise_seed}.
Rows: [uncond, cond, reference]. uncond: uncond text with the negative image's tokens
(method uncond) or the "no image" tokens (method negtome), IP scale neg_weight; cond: prompt
and positive image, IP scale weight; reference: empty text, "no image" tokens, IP scale 0,
latents = the VAE's latent mean of the negative image (already at the generation size) times
the scaling factor, re-noised at each step with DDIMScheduler.add_noise and randn from
Generator().manual_seed(noise_seed).
Merge (steps with t_min <= t <= t_max, in the up blocks' attn1 and attn2 after to_out, where
the transformer's input is at least 32x32): each token x of rows 0 and 1 with best match
r* = argmax_r cos(x, r) over the reference row's tokens and cos(x, r*) > threshold becomes
(1 + alpha) x - alpha r*.
Writes `{name}.float` (the [0,1] image, [3,H,W]), `{name}.nomerge` (the same without the
merge) and `{name}.merged` (tokens merged over the run, as a one-element tensor).
"""
import json, os, sys
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from diffusers import StableDiffusionPipeline, DDIMScheduler
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection, CLIPImageProcessor

torch.set_num_threads(2)
models, cases_path, out_path = sys.argv[1:4]
cases = json.load(open(cases_path))
encoder = CLIPVisionModelWithProjection.from_pretrained(os.path.join(models, "image_encoder")).eval()
processor = CLIPImageProcessor()

# What the merging processors read: on/off, alpha/threshold, the current transformer's size.
state = {"on": False, "alpha": 0.0, "threshold": 0.0, "hw": (0, 0), "merged": 0}


def merge(out):
    """Rows 0 and 1 of `out` [3, N, C] merged against row 2."""
    ref = out[2]
    rn = F.normalize(ref, dim=-1)
    rows = [out[0], out[1]]
    for k in range(2):
        x = out[k]
        cos = F.normalize(x, dim=-1) @ rn.T  # [N tokens of x, N tokens of the reference]
        best, idx = cos.max(dim=-1)
        mask = (best > state["threshold"])[:, None]
        state["merged"] += int(mask.sum())
        a = state["alpha"]
        rows[k] = torch.where(mask, (1 + a) * x - a * ref[idx], x)
    return torch.stack(rows + [ref])


class Merging:
    """Wraps an attention processor: the merge after its output projection."""
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def __call__(self, attn, hidden_states, *args, **kwargs):
        out = self.inner(attn, hidden_states, *args, **kwargs)
        h, w = state["hw"]
        if state["on"] and h >= 32 and w >= 32:
            out = merge(out)
        return out


def load_pipe(adapter):
    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(models, "pipeline"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    name = {"base": "ip-adapter_sd15.safetensors", "plus": "ip-adapter-plus_sd15.safetensors"}[adapter]
    sd = {"image_proj": {}, "ip_adapter": {}}
    for key, value in load_file(os.path.join(models, name)).items():
        head, rest = key.split(".", 1)
        sd[head][rest] = value
    pipe.unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    procs = {}
    for key, proc in pipe.unet.attn_processors.items():
        procs[key] = Merging(proc) if key.startswith("up_blocks") else proc
    pipe.unet.set_attn_processor(procs)
    for block in pipe.unet.up_blocks:
        for t in getattr(block, "attentions", []):
            t.register_forward_pre_hook(lambda m, a: state.update(hw=tuple(a[0].shape[-2:])))
    return pipe


class RowScale:
    """A per-row IP scale [R,1,1] that IPAdapterAttnProcessor2_0 multiplies with."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, x):
        return self.t.to(x.dtype) * x
    __rmul__ = __mul__


def set_scales(pipe, scales):
    t = torch.tensor(scales, dtype=torch.float32).view(len(scales), 1, 1)
    for proc in pipe.unet.attn_processors.values():
        inner = getattr(proc, "inner", proc)
        if isinstance(inner, IPAdapterAttnProcessor2_0):
            inner.scale = [RowScale(t)]


@torch.no_grad()
def features(path, adapter):
    if path is None:
        pixels = processor(images=Image.new("RGB", (224, 224)), return_tensors="pt").pixel_values
        if adapter == "base":
            return torch.zeros_like(encoder(pixels).image_embeds)[:, None]
        return encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2][:, None]
    pixels = processor(images=Image.open(path).convert("RGB"), return_tensors="pt").pixel_values
    out = encoder(pixels, output_hidden_states=True)
    return out.image_embeds[:, None] if adapter == "base" else out.hidden_states[-2][:, None]


@torch.no_grad()
def generate(pipe, c, merging):
    a = c["adapter"]
    uncond_image = c["neg_image"] if c["method"] == "uncond" else None
    rows = [(c["uncond_prompt"], features(uncond_image, a), c["neg_weight"]),
            (c["prompt"], features(c["pos_image"], a), c["weight"]),
            ("", features(None, a), 0.0)]
    text = torch.cat([pipe.encode_prompt(t, "cpu", 1, False)[0] for t, _, _ in rows])
    image_embeds = [torch.cat([f for _, f, _ in rows])]
    set_scales(pipe, [w for _, _, w in rows])
    img = np.asarray(Image.open(c["neg_image"]).convert("RGB"), dtype=np.float32)
    pixels = torch.from_numpy(img).permute(2, 0, 1)[None] / 127.5 - 1.0
    z0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    ref_noise = torch.randn(z0.shape, generator=torch.Generator("cpu").manual_seed(c["noise_seed"]))
    n, size = c["steps"], c["size"]
    sched = pipe.scheduler
    sched.set_timesteps(n)
    g = torch.Generator("cpu").manual_seed(c["seed"])
    f = pipe.vae_scale_factor
    x = torch.randn([1, 4, size // f, size // f], generator=g) * sched.init_noise_sigma
    state.update(alpha=c["alpha"], threshold=c["threshold"])
    for t in sched.timesteps:
        ref = sched.add_noise(z0, ref_noise, t.view(1))
        state["on"] = merging and c["t_min"] <= int(t) <= c["t_max"]
        x_in = sched.scale_model_input(torch.cat([x, x, ref]), t)
        eps = pipe.unet(x_in, t, encoder_hidden_states=text,
                        added_cond_kwargs={"image_embeds": image_embeds}).sample
        e0, e1 = eps[0:1], eps[1:2]
        x = sched.step(e0 + c["cfg"] * (e1 - e0), t, x).prev_sample
    image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    return (image[0] / 2 + 0.5).clamp(0, 1).float().contiguous()


pipes = {}
out = {}
for c in cases:
    if c["adapter"] not in pipes:
        pipes[c["adapter"]] = load_pipe(c["adapter"])
    pipe = pipes[c["adapter"]]
    state["merged"] = 0
    out[c["name"] + ".float"] = generate(pipe, c, True)
    out[c["name"] + ".merged"] = torch.tensor([float(state["merged"])])
    out[c["name"] + ".nomerge"] = generate(pipe, c, False)
    print(c["name"], "merged tokens:", state["merged"])
save_file(out, out_path)
