"""Reference images for `method = "dng"` (tests/parity_dng.rs): Dynamic Negative Guidance
(Koulischer et al., ICLR 2025; FelixKoulischer/Dynamic-Negative-Guidance,
utils/Generate_Batch_pretrained.py `gen_batch_DNG` and `compute_posterior_DNG`) on diffusers'
UNet, VAE and EulerAncestralDiscreteScheduler, in common_ref's hand-written loop (the seeded
generator feeds the initial latents and every step's noise, as the pipeline does).

usage: dng_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of common_ref's cases with `dng`: {guidance_scale, prior, temp, offset,
 p_min, p_max} and `scheduler` (euler_ancestral).
Rows: [empty text + "no image", prompt + positive image, uncond text + uncond image (the
negative)], IP scales [positive, positive, negative] (steps window rule).
Guidance at step i with posterior p: e0 + cfg (e1 - e0) - lam (e2 - e0),
lam = guidance_scale p / (1 - p). After step i (x -> x', sigmas s_i -> s_{i+1}, the
scheduler's s_up, s_down), the transition means under e0 and e2 are
mu = x + (s_down - s_i) e, and
p <- clamp(p exp((-temp (|x' - mu2|^2 - |x' - mu0|^2) + offset) / (2 s_up^2)), p_min, p_max)
(compute_posterior_DNG with the ancestral step's Gaussian in place of DDPM's; the update
after the last step, where s_up = 0, is never used and not computed).
Writes `{name}.float` (the [0,1] image, [3,H,W]) and `{name}.posterior` ([steps], the p each
step guided with).
"""

import os, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import at, features, make_scheduler, run_cases, sample, set_scales


def outputs(pipe, c):
    a, n, d = c["adapter"], c["steps"], c["dng"]
    pos, neg = c["positive"], c["negative"]
    rows = [("", features(None, a), pos), (c["prompt"], features(c["pos_image"], a), pos),
            (c["uncond_prompt"], features(c["uncond_image"], a), neg)]
    sched = make_scheduler(pipe, c["scheduler"])
    sched.set_timesteps(n)
    sigmas = sched.sigmas
    state = {"p": torch.tensor(d["prior"], dtype=torch.float32), "last": None, "used": []}

    def update_posterior(i, x_next):
        x, e0, e2 = state["last"]
        s, s_to = sigmas[i], sigmas[i + 1]
        s_up = (s_to ** 2 * (s ** 2 - s_to ** 2) / s ** 2) ** 0.5
        s_down = (s_to ** 2 - s_up ** 2) ** 0.5
        mu_uncond = x + (s_down - s) * e0
        mu_neg = x + (s_down - s) * e2
        diff = ((x_next - mu_neg) ** 2).sum() - ((x_next - mu_uncond) ** 2).sum()
        p = state["p"] * torch.exp(1 / (2 * s_up ** 2) * (-d["temp"] * diff + d["offset"]))
        state["p"] = torch.clamp(p, min=d["p_min"], max=d["p_max"])

    def before_step(i, t, x):
        if i > 0:
            update_posterior(i - 1, x)
        set_scales(pipe, [at(b, i, n) for _, _, b in rows])
        state["x"] = x
        return torch.cat([x] * 3)

    def guide(eps):
        e0, e1, e2 = eps.chunk(3)
        p = state["p"]
        state["used"].append(p.item())
        state["last"] = (state["x"], e0, e2)
        lam = d["guidance_scale"] * p / (1 - p)
        return e0 + c["cfg"] * (e1 - e0) - lam * (e2 - e0)

    image = sample(pipe, sched, c, rows, before_step, guide)
    return {c["name"] + ".float": image,
            c["name"] + ".posterior": torch.tensor(state["used"], dtype=torch.float64)}


run_cases(outputs)
