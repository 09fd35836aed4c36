

# ---- Dynamic Negative Guidance (Koulischer et al., ICLR 2025) ------------------------------
# Guided e0 + cfg (e1 - e0) - lam p / (1 - p) (e2 - e0), lam = dng_guidance_scale, p the
# posterior that the sample shows the negative: dng_prior at the first step, then after each
# Euler ancestral step x -> x' (sigma -> sigma_next, the step's sigma_down and sigma_up)
# p <- clamp(p exp((-dng_temp (|x' - mu2|^2 - |x' - mu0|^2) + dng_offset) / (2 sigma_up^2)),
# dng_p_min, dng_p_max), mu = x + (sigma_down - sigma) e the step's mean under e0 or e2.
# The update after the last step (sigma_up = 0) is never used and not made.
DNG = {"p": None, "rows": None}


def guide(eps, i):
    """Rows [uncond (empty text, no image), cond, negative]."""
    e0, e1, e2 = eps.chunk(3)
    s = CELL["method_params"]
    if DNG["p"] is None:
        DNG["p"] = s["dng_prior"]
    DNG["rows"] = (e0, e2)
    scale = s["dng_guidance_scale"] * DNG["p"] / (1 - DNG["p"])
    return e0 + (e1 - e0) * CELL["cfg"] - (e2 - e0) * scale


def after_step(sched, i, x, x_next):
    """The posterior update from the step just taken (EulerAncestralDiscreteScheduler's
    sigmas, float32 as it computes them)."""
    s = CELL["method_params"]
    sigma, sigma_to = sched.sigmas[i].float(), sched.sigmas[i + 1].float()
    up = (sigma_to ** 2 * (sigma ** 2 - sigma_to ** 2) / sigma ** 2) ** 0.5
    down = (sigma_to ** 2 - up ** 2) ** 0.5
    if up.item() <= 0:
        return
    e0, e2 = DNG["rows"]
    drift = down.item() - sigma.item()
    dist = lambda e: (x_next - (x + e * drift)).square().sum(dtype=torch.float32).item()
    evidence = -s["dng_temp"] * (dist(e2) - dist(e0)) + s["dng_offset"]
    p = DNG["p"] * math.exp(evidence / (2 * up.item() ** 2))
    DNG["p"] = min(max(p, s["dng_p_min"]), s["dng_p_max"])
