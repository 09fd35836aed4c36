"""Reference images for NegToMe (tests/parity_negtome.rs, and on SDXL
tests/parity_sdxl_negtome.rs), on diffusers' UNet, VAE and DDIM with a hand-written sampling
loop and attention processors that apply the merge (SDXL's added conditioning as
common_ref.conditioning makes it).

usage: negtome_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, method: uncond|negtome, adapter: base|plus, prompt,
 uncond_prompt, pos_image, neg_image (paths), steps, cfg, seed, size, weight, neg_weight,
 alpha, threshold, t_min, t_max, noise_seed}.
Rows: [uncond, cond, reference]. uncond: uncond text with the negative image's tokens
(method uncond) or the "no image" tokens (method negtome), IP scale neg_weight; cond: prompt
and positive image, IP scale weight; reference: empty text (encoded, also on SDXL), "no
image" tokens, IP scale 0,
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

import os, sys
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import cfg2, features, make_scheduler, run_cases, sample, set_scales

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


def prepare(pipe):
    """The up blocks' attention processors wrapped in the merge; each transformer's input
    size recorded for them."""
    procs = {}
    for key, proc in pipe.unet.attn_processors.items():
        procs[key] = Merging(proc) if key.startswith("up_blocks") else proc
    pipe.unet.set_attn_processor(procs)
    for block in pipe.unet.up_blocks:
        for t in getattr(block, "attentions", []):
            t.register_forward_pre_hook(lambda m, a: state.update(hw=tuple(a[0].shape[-2:])))
    return pipe


@torch.no_grad()
def generate(pipe, c, merging):
    a = c["adapter"]
    uncond_image = c["neg_image"] if c["method"] == "uncond" else None
    rows = [(c["uncond_prompt"], features(uncond_image, a), c["neg_weight"]),
            (c["prompt"], features(c["pos_image"], a), c["weight"]),
            ("", features(None, a), 0.0)]
    set_scales(pipe, [w for _, _, w in rows])
    img = np.asarray(Image.open(c["neg_image"]).convert("RGB"), dtype=np.float32)
    pixels = torch.from_numpy(img).permute(2, 0, 1)[None] / 127.5 - 1.0
    z0 = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    ref_noise = torch.randn(z0.shape, generator=torch.Generator("cpu").manual_seed(c["noise_seed"]))
    sched = make_scheduler(pipe, "ddim")
    sched.set_timesteps(c["steps"])
    state.update(alpha=c["alpha"], threshold=c["threshold"])

    def before_step(i, t, x):
        ref = sched.add_noise(z0, ref_noise, t.view(1))
        state["on"] = merging and c["t_min"] <= int(t) <= c["t_max"]
        return torch.cat([x, x, ref])

    # The reference row's prediction only feeds the merge; on SDXL its empty text is
    # encoded, not zeroed, and it takes the default time ids of the size.
    guide = lambda eps: cfg2(c)(eps[0:2])
    return sample(pipe, sched, c, rows, before_step, guide, encoded_rows=(1, 2))


def outputs(pipe, c):
    state["merged"] = 0
    out = {c["name"] + ".float": generate(pipe, c, True),
           c["name"] + ".merged": torch.tensor([float(state["merged"])])}
    print(c["name"], "merged tokens:", state["merged"])
    out[c["name"] + ".nomerge"] = generate(pipe, c, False)
    return out


run_cases(outputs, prepare)
