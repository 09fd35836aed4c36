"""Reference images for per-block IP-Adapter weights and ComfyUI's embeds scaling
(tests/parity_blocks.rs), on diffusers' UNet, VAE and DDIM with a hand-written CFG loop.

usage: blocks_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, adapter: base|plus, prompt, uncond_prompt, pos_image, uncond_image
 (paths or null), steps, cfg, seed, size, positive: {weight, start, end}, negative: {...},
 blocks, neg_blocks (all | style | composition | strong_style | style_and_composition |
 "i:w, i:w"), ip_scaling
 (v | kv | kv_c | k_mean_v_c)}.
Rows: [uncond text + uncond image (negative branch, neg_blocks), prompt + positive image
(positive branch, blocks)]. Blocks are the UNet's Transformer2DModels in execution order (down,
mid, up), as ComfyUI's transformer_index; presets as ComfyUI_IPAdapter_plus's weight types
(IPAdapterPlus.py: "style transfer", "composition", "strong style transfer", "style and
composition") on SD1.5's 16 transformers or, with 11 (SDXL's layout), its SDXL branch; on SDXL
the style and composition transformers are checked against diffusers' InstantStyle scales.
ip_scaling v runs diffusers' own IPAdapterAttnProcessor2_0 with a per-layer, per-row scale;
the other scalings run the processor below, written from CrossAttentionPatch.py's formulas.
Writes `{name}.float` (the [0,1] image, [3,H,W]).
"""

import os, sys
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import RowScale, at, cfg2, features, make_scheduler, run_cases, sample

# ComfyUI_IPAdapter_plus, IPAdapterPlus.py, ipadapter_execute: the weight dict of each weight
# type, keyed by transformer_index; SD1.5 (16 transformers) and the `is_sdxl` branch (11).
# "style and composition" at its default weight_composition (1).
PRESETS = {
    16: {
        "style": {i: 1.0 for i in [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]},
        "composition": {4: 0.25, 5: 1.0},
        "strong_style": {i: 1.0 for i in [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]},
        "style_and_composition": {**{i: 1.0 for i in [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]},
                                  4: 0.25, 5: 1.0},
    },
    11: {
        "style": {6: 1.0},
        "composition": {3: 1.0},
        "strong_style": {i: 1.0 for i in [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]},
        "style_and_composition": {3: 1.0, 6: 1.0},
    },
}

# diffusers' InstantStyle scale dicts for SDXL (its IP-Adapter guide, set_ip_adapter_scale):
# the same transformers as ComfyUI's SDXL "style transfer" and "composition".
INSTANTSTYLE = {
    "style": {"up": {"block_0": [0.0, 1.0, 0.0]}},
    "composition": {"down": {"block_2": [0.0, 1.0]}},
}


def factors(spec, n):
    if spec == "all":
        return [1.0] * n
    table = PRESETS[n].get(spec) if spec in PRESETS[16] else None
    if table is None:
        table = {int(i): float(w) for i, w in (item.split(":") for item in spec.split(","))}
    return [table.get(i, 0.0) for i in range(n)]


def check_instantstyle(pipe):
    """On SDXL's layout, asserts that diffusers' own set_ip_adapter_scale puts each
    InstantStyle dict's scale on exactly the transformers of the preset (ComfyUI's numbering
    over transformers_in_execution_order)."""
    if len(pipe.order) != 11:
        return
    for preset, scale in INSTANTSTYLE.items():
        pipe.set_ip_adapter_scale(scale)
        procs = pipe.unet.attn_processors
        got = [procs[names[0]].scale[0] for names in pipe.order]
        assert all(procs[n].scale[0] == got[j] for j, names in enumerate(pipe.order) for n in names)
        assert got == factors(preset, 11), (preset, got)


def transformers_in_execution_order(unet):
    """The attn2 processor names of each Transformer2DModel, down blocks, mid, up blocks."""
    names = []
    def add(prefix, attentions):
        for a, t in enumerate(attentions):
            names.append([f"{prefix}.attentions.{a}.transformer_blocks.{k}.attn2.processor"
                          for k in range(len(t.transformer_blocks))])
    for i, b in enumerate(unet.down_blocks):
        add(f"down_blocks.{i}", getattr(b, "attentions", []))
    add("mid_block", unet.mid_block.attentions)
    for i, b in enumerate(unet.up_blocks):
        add(f"up_blocks.{i}", getattr(b, "attentions", []))
    return names


class ScaledIPProcessor:
    """Decoupled cross-attention whose image branch takes the weight as ComfyUI's
    embeds_scaling: 'K+V' (kv), 'K+V w/ C penalty' (kv_c), 'K+mean(V) w/ C penalty'
    (k_mean_v_c); C = the image keys' width, penalty C/1280, mean over the image tokens."""
    def __init__(self, ip_proc, mode):
        self.to_k_ip, self.to_v_ip = ip_proc.to_k_ip[0], ip_proc.to_v_ip[0]
        self.mode = mode
        self.w = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        text, ip = encoder_hidden_states
        b = hidden_states.shape[0]
        ip = ip[0].reshape(b, -1, ip[0].shape[-1])
        heads = attn.heads

        def attend(q, k, v):
            split = lambda x: x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)
            out = F.scaled_dot_product_attention(split(q), split(k), split(v))
            return out.transpose(1, 2).reshape(b, -1, q.shape[-1])

        q = attn.to_q(hidden_states)
        out = attend(q, attn.to_k(text), attn.to_v(text))
        k, v = self.to_k_ip(ip), self.to_v_ip(ip)
        w = self.w
        if self.mode == "kv":
            out = out + attend(q, k * w, v * w)
        else:
            w = w * (k.shape[2] / 1280.0)
            if self.mode == "kv_c":
                out = out + attend(q, k * w, v * w)
            else:
                mean = v.mean(dim=1, keepdim=True)
                out = out + attend(q, k * w, (v - mean) + mean * w)
        return attn.to_out[1](attn.to_out[0](out))


def set_scaling(pipe, mode):
    """The processors of `mode`: diffusers' for v, ScaledIPProcessor otherwise."""
    base = pipe.base_procs
    if mode == "v":
        pipe.unet.set_attn_processor(dict(base))
    else:
        pipe.unet.set_attn_processor({
            name: ScaledIPProcessor(p, mode) if isinstance(p, IPAdapterAttnProcessor2_0) else p
            for name, p in base.items()})


def set_scales(pipe, per_block_rows):
    """per_block_rows[j]: the scale of each row in transformer j."""
    procs = pipe.unet.attn_processors
    for j, names in enumerate(pipe.order):
        t = torch.tensor(per_block_rows[j], dtype=torch.float32).view(-1, 1, 1)
        for name in names:
            p = procs[name]
            if isinstance(p, IPAdapterAttnProcessor2_0):
                p.scale = [RowScale(t)]
            else:
                p.w = t


def prepare(pipe):
    pipe.base_procs = dict(pipe.unet.attn_processors)
    pipe.order = transformers_in_execution_order(pipe.unet)
    check_instantstyle(pipe)
    return pipe


def outputs(pipe, c):
    set_scaling(pipe, c["ip_scaling"])
    nb = len(pipe.order)
    rows = [(c["uncond_prompt"], features(c["uncond_image"], c["adapter"]), c["negative"],
             factors(c["neg_blocks"], nb)),
            (c["prompt"], features(c["pos_image"], c["adapter"]), c["positive"],
             factors(c["blocks"], nb))]
    n = c["steps"]
    sched = make_scheduler(pipe, "ddim")
    sched.set_timesteps(n)

    def before_step(i, t, x):
        set_scales(pipe, [[at(b, i, n) * fs[j] for _, _, b, fs in rows] for j in range(nb)])
        return torch.cat([x] * len(rows))

    return {c["name"] + ".float": sample(pipe, sched, c, rows, before_step, cfg2(c))}


if __name__ == "__main__":
    run_cases(outputs, prepare)
