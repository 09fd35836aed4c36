

# ---- NAG: Normalized Attention Guidance (Chen et al. 2025, arXiv 2505.21179) -------------
# In every cross-attention, before to_out, a row whose second image term carries "nag" (the
# cond row; the term: the negative image's tokens at the negative branch's weight) is guided
# away from it: z+ = text attention + the row's own image term, z- = text attention + the
# second term, z~ = s z+ - (s - 1) z-, r = |z~|_1 / |z+|_1 per token (each at least 1e-6),
# z = alpha z~ min(r, tau) / r + (1 - alpha) z+ (s, tau, alpha: nag_scale, nag_tau,
# nag_alpha). Where the term's weight is 0 (its window, its blocks), and in the other rows,
# the term is added (0 in a row without it).


def nag_of(row):
    return row["extra"]["nag"] if row["extra"] else None


def nag_strength(key, n, like):
    """NAG's `key` of each row [n,1,1] (1 in a row without NAG, as in NegToMe's extra rows)."""
    values = [nag_of(r)[key] if nag_of(r) else 1.0 for r in ROWS]
    values += [1.0] * (n - len(values))
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def join_terms(text, terms, weights):
    """`text` [B,N,C] the text attention, `terms` the image terms of ADAPTER_TERMS at their
    weights, `weights` those weights per row [B,1,1] in this block."""
    positive, term = text + terms[0], terms[1]
    n = positive.shape[0]
    s, tau, alpha = (nag_strength(k, n, positive) for k in ("scale", "tau", "alpha"))
    guided = positive * s - (text + term) * (s - 1)
    l1 = lambda z: torch.linalg.vector_norm(z, 1, dim=-1, keepdim=True).clamp_min(1e-6)
    ratio = l1(guided) / l1(positive)
    capped = guided * torch.minimum(ratio, tau) / ratio
    nag = capped * alpha + positive * (1 - alpha)
    rows = [nag_of(r) is not None for r in ROWS]
    on = torch.tensor(rows + [False] * (n - len(rows)), device=positive.device).view(-1, 1, 1)
    active = on & (weights[1].to(positive.device) != 0)
    return torch.where(active, nag, positive + term)
