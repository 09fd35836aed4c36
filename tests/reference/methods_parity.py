"""Reference images for the negative methods (tests/parity_methods.rs), written on diffusers'
UNet, VAE and schedulers with a hand-written sampling loop, since diffusers' pipeline runs two
CFG rows only.

usage: methods_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, method: uncond|subtract|three_branch|perp_neg, adapter: base|plus,
 prompt, uncond_prompt, pos_image, uncond_image (paths or null), steps, cfg, neg_cfg,
 neg_embed_scale, seed, size, positive: {weight, start, end}, negative: {weight, start, end},
 and optionally scheduler: ddim (default) | dpmpp_2m_karras | euler_ancestral, window: steps
 (default) | sigma}.
Rows per method (image features and "no image" as common_ref.py):
- uncond: [uncond text + uncond image, prompt + positive image]; weights [negative, positive].
- subtract: [uncond text + no image, prompt + (f(pos) - s * f(neg))]; weights as uncond.
- three_branch, perp_neg: [empty text + no image, prompt + positive image, uncond text +
  uncond image]; weights [positive, positive, negative].
Guidance: uncond e0 + cfg (e1 - e0); three_branch e0 + cfg p - neg_cfg n; perp_neg
e0 + cfg (p - neg_cfg (n - <n,p>/|p|^2 p)), with p = e1 - e0, n = e2 - e0 over the image.
Windows: `steps`: step i of N is active iff start <= i/N < end. `sigma` (ComfyUI's
ModelSamplingDiscrete.percent_to_sigma and IPAdapter_plus' CrossAttentionPatch gate): a
fraction p is the sigma at timestep (1-p)(T-1) of the scheduler's alphas_cumprod, log-sigma
interpolated (float32), with p <= 0 -> 999999999.9 and p >= 1 -> 0; a step is active iff
sigma(end) <= sigma_i <= sigma(start), sigma_i = sqrt((1-a_t)/a_t) at the step's timestep for
DDIM, the scheduler's sigmas[i] for DPM++ and Euler ancestral.
Writes `{name}.float` (the [0,1] image, [3,H,W]) and `{name}.active` ([rows, steps], 1 where
the row's branch is active).
"""

import os, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import cfg2, features, make_scheduler, run_cases, sample, set_scales


def percent_to_sigma(log_sigmas, p):
    if p <= 0.0:
        return 999999999.9
    if p >= 1.0:
        return 0.0
    t = torch.clamp(torch.tensor((1.0 - p) * (len(log_sigmas) - 1)), min=0, max=len(log_sigmas) - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp().item()


def step_sigmas(sched, kind):
    """sigma_i of each step, as the window rule sees it."""
    if kind == "ddim":
        a = sched.alphas_cumprod[sched.timesteps]
        return [s.item() for s in ((1 - a) / a) ** 0.5]
    return [s.item() for s in sched.sigmas[:len(sched.timesteps)]]


def active(branch, i, n, window, sigma, log_sigmas):
    if window == "steps":
        return branch["start"] <= i / n < branch["end"]
    high = percent_to_sigma(log_sigmas, branch["start"])
    low = percent_to_sigma(log_sigmas, branch["end"])
    return low <= sigma <= high


def rows(c):
    a, pos, neg = c["adapter"], c["positive"], c["negative"]
    m = c["method"]
    if m == "uncond":
        return [(c["uncond_prompt"], features(c["uncond_image"], a), neg),
                (c["prompt"], features(c["pos_image"], a), pos)]
    if m == "subtract":
        cond = features(c["pos_image"], a)
        if c["uncond_image"] is not None:
            cond = cond - c["neg_embed_scale"] * features(c["uncond_image"], a)
        return [(c["uncond_prompt"], features(None, a), neg), (c["prompt"], cond, pos)]
    return [("", features(None, a), pos), (c["prompt"], features(c["pos_image"], a), pos),
            (c["uncond_prompt"], features(c["uncond_image"], a), neg)]


def guide(c):
    if c["method"] in ("uncond", "subtract"):
        return cfg2(c)
    def three(eps):
        e0, e1, e2 = eps.chunk(3)
        p, n = e1 - e0, e2 - e0
        if c["method"] == "three_branch":
            return e0 + c["cfg"] * p - c["neg_cfg"] * n
        perp = n - (n * p).sum() / (p * p).sum() * p
        return e0 + c["cfg"] * (p - c["neg_cfg"] * perp)
    return three


def outputs(pipe, c):
    r = rows(c)
    n = c["steps"]
    kind, window = c.get("scheduler", "ddim"), c.get("window", "steps")
    sched = make_scheduler(pipe, kind)
    sched.set_timesteps(n)
    ac = sched.alphas_cumprod.float()
    log_sigmas = (((1 - ac) / ac) ** 0.5).log()
    sigmas = step_sigmas(sched, kind)
    on = [[active(b, i, n, window, sigmas[i], log_sigmas) for i in range(n)] for _, _, b in r]

    def before_step(i, t, x):
        set_scales(pipe, [b["weight"] if on[k][i] else 0.0 for k, (_, _, b) in enumerate(r)])
        return torch.cat([x] * len(r))

    return {c["name"] + ".float": sample(pipe, sched, c, r, before_step, guide(c)),
            c["name"] + ".active": torch.tensor(on, dtype=torch.int64)}


if __name__ == "__main__":
    run_cases(outputs)
