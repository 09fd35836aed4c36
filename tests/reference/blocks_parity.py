"""Reference images for per-block IP-Adapter weights and ComfyUI's embeds scaling
(tests/parity_blocks.rs), on diffusers' UNet, VAE and DDIM with a hand-written CFG loop.

usage: blocks_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, adapter: base|plus, prompt, uncond_prompt, pos_image, uncond_image
 (paths or null), steps, cfg, seed, size, positive: {weight, start, end}, negative: {...},
 blocks, neg_blocks (all | style | composition | strong_style | "i:w, i:w"), ip_scaling
 (v | kv | kv_c | k_mean_v_c)}.
Rows: [uncond text + uncond image (negative branch, neg_blocks), prompt + positive image
(positive branch, blocks)]. Blocks are the UNet's Transformer2DModels in execution order (down,
mid, up), as ComfyUI's transformer_index; presets as ComfyUI_IPAdapter_plus's SD1.5 weight
types (IPAdapterPlus.py: "style transfer", "composition", "strong style transfer").
ip_scaling v runs diffusers' own IPAdapterAttnProcessor2_0 with a per-layer, per-row scale;
the other scalings run the processor below, written from CrossAttentionPatch.py's formulas.
Writes `{name}.float` (the [0,1] image, [3,H,W]).
"""
import json, os, sys
import torch
import torch.nn.functional as F
from PIL import Image
from diffusers import StableDiffusionPipeline, DDIMScheduler
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection, CLIPImageProcessor

torch.set_num_threads(2)
models, cases_path, out_path = sys.argv[1:4]
cases = json.load(open(cases_path))
encoder = CLIPVisionModelWithProjection.from_pretrained(os.path.join(models, "image_encoder")).eval()
processor = CLIPImageProcessor()

# ComfyUI_IPAdapter_plus, ipadapter_execute, SD1.5 (16 transformers).
PRESETS = {
    "style": {i: 1.0 for i in [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]},
    "composition": {4: 0.25, 5: 1.0},
    "strong_style": {i: 1.0 for i in [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]},
}


def factors(spec, n):
    if spec == "all":
        return [1.0] * n
    table = PRESETS.get(spec)
    if table is None:
        table = {int(i): float(w) for i, w in (item.split(":") for item in spec.split(","))}
    return [table.get(i, 0.0) for i in range(n)]


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


def load_pipe(adapter):
    pipe = StableDiffusionPipeline.from_pretrained(
        os.path.join(models, "pipeline"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    name = {"base": "ip-adapter_sd15.safetensors", "plus": "ip-adapter-plus_sd15.safetensors"}[adapter]
    sd = {"image_proj": {}, "ip_adapter": {}}
    for key, value in load_file(os.path.join(models, name)).items():
        head, rest = key.split(".", 1)
        sd[head][rest] = value
    pipe.unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


class RowScale:
    """A per-row IP scale [R,1,1] that IPAdapterAttnProcessor2_0 multiplies with."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, x):
        return self.t.to(x.dtype) * x
    __rmul__ = __mul__


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


def at(branch, i, n):
    return branch["weight"] if branch["start"] <= i / n < branch["end"] else 0.0


@torch.no_grad()
def features(path, adapter):
    if path is None:
        pixels = processor(images=Image.new("RGB", (224, 224)), return_tensors="pt").pixel_values
        if adapter == "base":
            return torch.zeros_like(encoder(pixels).image_embeds)[:, None]
        return encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2][:, None]
    pixels = processor(images=Image.open(path).convert("RGB"), return_tensors="pt").pixel_values
    out = encoder(pixels, output_hidden_states=True)
    return out.image_embeds[:, None] if adapter == "base" else out.hidden_states[-2][:, None]


pipes = {}
out = {}
with torch.no_grad():
    for c in cases:
        if c["adapter"] not in pipes:
            pipe = load_pipe(c["adapter"])
            pipe.base_procs = dict(pipe.unet.attn_processors)
            pipe.order = transformers_in_execution_order(pipe.unet)
            pipes[c["adapter"]] = pipe
        pipe = pipes[c["adapter"]]
        set_scaling(pipe, c["ip_scaling"])
        nb = len(pipe.order)
        rows = [(c["uncond_prompt"], features(c["uncond_image"], c["adapter"]), c["negative"],
                 factors(c["neg_blocks"], nb)),
                (c["prompt"], features(c["pos_image"], c["adapter"]), c["positive"],
                 factors(c["blocks"], nb))]
        text = torch.cat([pipe.encode_prompt(t, "cpu", 1, False)[0] for t, _, _, _ in rows])
        image_embeds = [torch.cat([f for _, f, _, _ in rows])]
        n, size = c["steps"], c["size"]
        sched = pipe.scheduler
        sched.set_timesteps(n)
        g = torch.Generator("cpu").manual_seed(c["seed"])
        f = pipe.vae_scale_factor
        x = torch.randn([1, 4, size // f, size // f], generator=g) * sched.init_noise_sigma
        for i, t in enumerate(sched.timesteps):
            set_scales(pipe, [[at(b, i, n) * fs[j] for _, _, b, fs in rows] for j in range(nb)])
            x_in = sched.scale_model_input(torch.cat([x] * len(rows)), t)
            eps = pipe.unet(x_in, t, encoder_hidden_states=text,
                            added_cond_kwargs={"image_embeds": image_embeds}).sample
            e0, e1 = eps.chunk(2)
            x = sched.step(e0 + c["cfg"] * (e1 - e0), t, x).prev_sample
        image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
        out[c["name"] + ".float"] = (image[0] / 2 + 0.5).clamp(0, 1).float().contiguous()
save_file(out, out_path)
