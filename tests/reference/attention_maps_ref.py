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
  faithful [1].
"""
import math
import sys
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
        for key, value in record.items():
            sums[key] = sums.get(key, 0) + value
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
    out["faithful"] = torch.tensor([max(faithful)])
save_file({k: v.contiguous() for k, v in out.items()}, out_path)
