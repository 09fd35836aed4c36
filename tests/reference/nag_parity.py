"""Reference images for `method = "nag"` (tests/parity_nag.rs): the tiny diffusers UNet with
its IP-Adapter, every cross-attention (`attn2`) run by an attention processor written here
for Normalized Attention Guidance (Chen et al. 2025; the arithmetic of ComfyUI's
comfy_extras/nodes_nag.py and ChenDarYen/ComfyUI-NAG's utils.nag), in common_ref's CFG loop.

Rows [uncond text + "no image" at the negative weight, prompt + positive image at the
positive weight] (IP scales under the steps window rule). In each cross-attention, before
`to_out`: z = Attn(q, text) + scale * Attn(q, to_k_ip(img), to_v_ip(img)) per row; for the
cond row, z_neg = Attn(q, text) + neg_scale * Attn(q, to_k_ip(neg), to_v_ip(neg)) with the
negative image's tokens (the adapter's projection of its features), and, where neg_scale is
not 0, z_cond = alpha * g * min(r, tau) / r + (1 - alpha) * z_cond with
g = s * z_cond - (s - 1) * z_neg, r = |g|_1 / |z_cond|_1 per token (each floored at 1e-6).

usage: nag_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: common_ref's cases with `nag`: {scale, tau, alpha}.
Writes `{name}.float` (the [0,1] image, [3,H,W]).
"""

import os, sys
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import at, cfg2, features, ip_processor, make_scheduler, run_cases, sample


def heads(attn, x):
    b, n, c = x.shape
    return x.view(b, n, attn.heads, c // attn.heads).transpose(1, 2)


def attend(attn, q, k, v):
    out = F.scaled_dot_product_attention(q, heads(attn, k), heads(attn, v))
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def nag(z_pos, z_neg, s, tau, alpha):
    g = z_pos * s - z_neg * (s - 1)
    l1 = lambda z: z.abs().sum(-1, keepdim=True).clamp_min(1e-6)
    r = l1(g) / l1(z_pos)
    g = g * torch.clamp(r, max=tau) / r
    return g * alpha + z_pos * (1 - alpha)


class NagProcessor:
    """Cross-attention with the IP-Adapter term and NAG on the last row (the cond row)."""

    def __init__(self, ip):
        self.ip = ip
        self.scales = None      # [rows, 1, 1]
        self.neg_scale = 0.0
        self.neg_tokens = None  # [1, T, cross]
        self.nag = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        text, ip_tokens = encoder_hidden_states
        q = heads(attn, attn.to_q(hidden_states))
        text_out = attend(attn, q, attn.to_k(text), attn.to_v(text))
        k_ip, v_ip = self.ip.to_k_ip[0], self.ip.to_v_ip[0]
        tokens = ip_tokens[0].flatten(1, 2)  # [B, images, T, cross] -> [B, T, cross]
        image = attend(attn, q, k_ip(tokens), v_ip(tokens))
        z = text_out + self.scales * image
        if self.neg_scale != 0.0:
            neg = self.neg_tokens.expand(q.shape[0], -1, -1)
            z_neg = text_out[1:] + self.neg_scale * attend(attn, q, k_ip(neg), v_ip(neg))[1:]
            n = self.nag
            z = torch.cat([z[:1], nag(z[1:], z_neg, n["scale"], n["tau"], n["alpha"])])
        return attn.to_out[0](z)


def prepare(pipe):
    procs = {}
    for name, proc in pipe.unet.attn_processors.items():
        ip = ip_processor(proc)
        procs[name] = NagProcessor(ip) if ("attn2" in name and ip is not None) else proc
    pipe.unet.set_attn_processor(procs)
    return pipe


def outputs(pipe, c):
    a, n = c["adapter"], c["steps"]
    nag_procs = [p for p in pipe.unet.attn_processors.values() if isinstance(p, NagProcessor)]
    assert nag_procs
    neg_tokens = pipe.unet.encoder_hid_proj([features(c["uncond_image"], a)])[0].flatten(1, 2)
    for p in nag_procs:
        p.neg_tokens, p.nag = neg_tokens, c["nag"]
    rows = [(c["uncond_prompt"], features(None, a)), (c["prompt"], features(c["pos_image"], a))]

    def before_step(i, t, x):
        scales = torch.tensor([at(c["negative"], i, n), at(c["positive"], i, n)])
        for p in nag_procs:
            p.scales = scales.view(2, 1, 1)
            p.neg_scale = at(c["negative"], i, n)
        return torch.cat([x, x])

    sched = make_scheduler(pipe, c["scheduler"])
    sched.set_timesteps(n)
    return {c["name"] + ".float": sample(pipe, sched, c, rows, before_step, cfg2(c))}


run_cases(outputs, prepare)
