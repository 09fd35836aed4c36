

def guide(eps, i):
    """Rows [uncond, cond, negative]: e0 + cfg (e1 - e0) - neg_cfg (e2 - e0)."""
    e0, e1, e2 = eps.chunk(3)
    return e0 + CELL["cfg"] * (e1 - e0) - CELL["neg_cfg"] * (e2 - e0)
