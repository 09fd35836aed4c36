

# ---- SEGA (Brack et al. 2023; diffusers' SemanticStableDiffusionPipeline) -----------------
# The negative image (and text) is the one editing concept, reversed. At step i:
# g = -sega_guidance_scale (e2 - e0), kept where |g| reaches the sega_threshold quantile of
# |g| over its channel's pixels (zero elsewhere, and zero from step sega_cooldown_steps on);
# e = g + sega_momentum_scale m, then m <- sega_mom_beta m + (1 - sega_mom_beta) e (m starts at
# 0 and builds up during the warm-up); guided e0 + cfg (e1 - e0) + e from step
# sega_warmup_steps on, plain CFG before. At cfg <= 1 the cond row alone.
SEGA = {"momentum": None}


def top_quantile(g, q):
    """g [C,H,W] where |g| reaches the q quantile (linear) of |g| over its channel, else 0."""
    a = g.abs()
    cut = torch.quantile(a.flatten(1), q, dim=1, interpolation="linear").view(-1, 1, 1)
    return torch.where(a >= cut, g, torch.zeros_like(g))


def guide(eps, i):
    """Rows [uncond (empty text, no image), cond, concept (the negative)]."""
    e0, e1, e2 = eps.chunk(3)
    if CELL["cfg"] <= 1:
        return e1
    s = CELL["method_params"]
    text = (e1 - e0) * CELL["cfg"]
    if i >= s["sega_cooldown_steps"]:
        masked = torch.zeros_like(e0)
    else:
        masked = top_quantile(((e2 - e0) * -s["sega_guidance_scale"])[0], s["sega_threshold"])[None]
    m = SEGA["momentum"] if SEGA["momentum"] is not None else torch.zeros_like(e0)
    edit = masked + m * s["sega_momentum_scale"]
    beta = s["sega_mom_beta"]
    SEGA["momentum"] = m * beta + edit * (1 - beta)
    return e0 + (text + edit) if i >= s["sega_warmup_steps"] else e0 + text
