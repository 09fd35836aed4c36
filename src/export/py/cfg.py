

def guide(eps, i):
    """Classifier-free guidance on the rows [uncond, cond]: e0 + cfg (e1 - e0); at cfg <= 1
    the cond row alone, as diffusers' pipeline (which then runs that row only)."""
    e0, e1 = eps.chunk(2)
    return e0 + CELL["cfg"] * (e1 - e0) if CELL["cfg"] > 1 else e1
