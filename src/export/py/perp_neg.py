

def guide(eps, i):
    """Rows [uncond, cond, negative], p = e1 - e0, n = e2 - e0: e0 + cfg (p - neg_cfg n_perp),
    n_perp = n - (<n,p> / |p|^2) p over the image's C x H x W (n where p = 0)."""
    e0, e1, e2 = eps.chunk(3)
    p, n = e1 - e0, e2 - e0
    coef = (n * p).sum() / (p * p).sum().clamp_min(torch.finfo(torch.float32).tiny)
    return e0 + CELL["cfg"] * (p - CELL["neg_cfg"] * (n - coef * p))
