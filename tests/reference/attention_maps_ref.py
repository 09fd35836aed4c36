"""Reference for tests/attention_maps.rs: attention maps recorded by attention processors
wrapped around diffusers' own IPAdapterAttnProcessor2_0 on diffusers' UNet (CPU, fp32, the
tiny random UNet and adapter the Rust test wrote).

usage: attention_maps_ref.py UNET_DIR ADAPTER.safetensors INPUTS.safetensors OUT.safetensors
inputs: latents [B,4,h,w] (square), text [B,M,cross], image_embeds [B,1,E], scales [B] (the
IP scale of each row), timesteps [S] (one UNet call per entry, the same latents).
Each wrapper returns diffusers' processor's output unchanged and records, per row:
  norm: |scale * IPAttn(q, to_k_ip(ip), to_v_ip(ip))| over channels (what the processor adds
        to the hidden states before to_out), recomputed; the test of faithfulness is that
        to_out(text attention + that term) is the processor's output (max diff in `faithful`);
  ip / text: diffusers' `Attention.get_attention_scores` on the image / text keys, averaged
        over heads.
out: tokens [B,T,cross]; eps_{s} per call; per transformer j (execution order: down, mid, up),
  summed over its layers and averaged over the calls: raw_norm_{j} [B,h_j,w_j], raw_ip_{j}
  [B,T,h_j,w_j], raw_text_{j} [B,M,h_j,w_j]; mean_{norm,ip,text}: each upsampled to (h, w) by
  F.interpolate(mode="bicubic", align_corners=False), clamped at 0, averaged over blocks;
  call_{norm,ip,text}_{j}_{s}: the sums of call s alone (not averaged), for the maps over a
  step set; faithful [1]; negtome_mask [M, N] (1 where the token of merged row
  negtome_rows[m] merges with negtome_refs[m]'s tokens at negtome_threshold[m], from
  negtome_xs [B, N, C], in numpy float64) and negtome_gap [1] (the closest cosine to its
  threshold).
"""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file

torch.set_num_threads(2)
unet_dir, adapter_path, inputs_path, out_path = sys.argv[1:5]
x = load_file(inputs_path)


class RowScale:
    """A per-row IP scale [B,1,1] that IPAdapterAttnProcessor2_0 multiplies with."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, v):
        return self.t.to(v.dtype) * v
    __rmul__ = __mul__


class Recording(torch.nn.Module):
    """diffusers' processor `inner`, recording into `store[block]` as it runs."""
    def __init__(self, inner, block, store, faithful):
        super().__init__()
        self.inner, self.block, self.store, self.faithful = inner, block, store, faithful

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, **kwargs)
        text, ips = encoder_hidden_states
        b, n, _ = hidden_states.shape
        ip = ips[0].reshape(b, -1, ips[0].shape[-1])
        q = attn.to_q(hidden_states)
        heads = attn.heads
        split = lambda t: t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2)
        merge = lambda t: t.transpose(1, 2).reshape(b, -1, t.shape[1] * t.shape[3])
        k_ip, v_ip = self.inner.to_k_ip[0](ip), self.inner.to_v_ip[0](ip)
        term = self.inner.scale[0] * merge(F.scaled_dot_product_attention(split(q), split(k_ip), split(v_ip)))
        k_text, v_text = attn.to_k(text), attn.to_v(text)
        text_out = merge(F.scaled_dot_product_attention(split(q), split(k_text), split(v_text)))
        again = attn.to_out[1](attn.to_out[0](text_out + term))
        self.faithful.append(float((again - out).abs().max()))

        def probs(k):
            p = attn.get_attention_scores(attn.head_to_batch_dim(q), attn.head_to_batch_dim(k))
            return p.view(b, heads, n, -1).mean(1)

        side = int(math.isqrt(n))
        grid = lambda t: t.transpose(1, 2).reshape(b, -1, side, side)
        record = {"norm": term.norm(dim=-1).view(b, side, side),
                  "ip": grid(probs(k_ip)), "text": grid(probs(k_text))}
        sums = self.store.setdefault(self.block, {})
        own = by_call.setdefault(call[0], {}).setdefault(self.block, {})
        for key, value in record.items():
            sums[key] = sums.get(key, 0) + value
            own[key] = own.get(key, 0) + value
        return out


def transformers(unet):
    """Each attn2 processor name -> its Transformer2DModel's number in execution order."""
    prefixes = []
    for i, blk in enumerate(unet.down_blocks):
        prefixes += [f"down_blocks.{i}.attentions.{a}." for a in range(len(getattr(blk, "attentions", [])))]
    prefixes += [f"mid_block.attentions.{a}." for a in range(len(unet.mid_block.attentions))]
    for i, blk in enumerate(unet.up_blocks):
        prefixes += [f"up_blocks.{i}.attentions.{a}." for a in range(len(getattr(blk, "attentions", [])))]
    return {name: j for name in unet.attn_processors for j, p in enumerate(prefixes)
            if name.startswith(p) and name.endswith("attn2.processor")}


unet = UNet2DConditionModel.from_pretrained(unet_dir).eval()
flat = load_file(adapter_path)
sd = {"image_proj": {}, "ip_adapter": {}}
for key, value in flat.items():
    head, rest = key.split(".", 1)
    sd[head][rest] = value
unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
store, faithful = {}, []
# The sums of each call alone (call index -> block -> key), for maps over a step set.
by_call, call = {}, [0]
order = transformers(unet)
procs = {}
for name, proc in unet.attn_processors.items():
    if isinstance(proc, IPAdapterAttnProcessor2_0):
        proc.scale = [RowScale(x["scales"].view(-1, 1, 1))]
        proc = Recording(proc, order[name], store, faithful)
    procs[name] = proc
unet.set_attn_processor(procs)

out = {}
with torch.no_grad():
    image_embeds = [x["image_embeds"]]
    out["tokens"] = unet.encoder_hid_proj(image_embeds)[0][:, 0].contiguous()
    calls = x["timesteps"].tolist()
    for s, t in enumerate(calls):
        call[0] = s
        out[f"eps_{s}"] = unet(x["latents"], float(t), encoder_hidden_states=x["text"],
                               added_cond_kwargs={"image_embeds": image_embeds}).sample
    size = tuple(x["latents"].shape[2:])
    means = {}
    for j in sorted(store):
        for key, value in store[j].items():
            raw = value / len(calls)
            out[f"raw_{key}_{j}"] = raw
            flat = raw.reshape(-1, 1, *raw.shape[-2:])
            up = F.interpolate(flat, size=size, mode="bicubic", align_corners=False).clamp(min=0)
            means.setdefault(key, []).append(up.reshape(*raw.shape[:-2], *size))
    for key, maps in means.items():
        out[f"mean_{key}"] = torch.stack(maps).mean(0)
    for s, blocks in by_call.items():
        for j, sums in blocks.items():
            for key, value in sums.items():
                out[f"call_{key}_{j}_{s}"] = value
    out["faithful"] = torch.tensor([max(faithful)])
    # NegToMe's merge decision (Singh et al. 2024) in numpy float64: each token x of a merged
    # row merges with its best reference token r* = argmax cos(x, r) when cos(x, r*) > threshold.
    xs = x["negtome_xs"].double().numpy()
    rows, refs = x["negtome_rows"].long().tolist(), x["negtome_refs"].long().tolist()
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    masks, gaps = [], []
    for row, ref, threshold in zip(rows, refs, x["negtome_threshold"].double().tolist()):
        cos = unit(xs[row]) @ unit(xs[ref]).T
        best = cos.max(-1)
        masks.append(best > threshold)
        gaps.append(np.abs(best - threshold).min())
    out["negtome_mask"] = torch.tensor(np.stack(masks), dtype=torch.float32)
    out["negtome_gap"] = torch.tensor([min(gaps)], dtype=torch.float32)
save_file({k: v.contiguous() for k, v in out.items()}, out_path)
