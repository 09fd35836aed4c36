"""Reference images for the negative methods (tests/parity_methods.rs), written on diffusers'
UNet, VAE and schedulers with a hand-written sampling loop, since diffusers' pipeline runs two
CFG rows only.

usage: methods_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, method: uncond|subtract|three_branch|perp_neg, adapter: base|plus,
 prompt, uncond_prompt, pos_image, uncond_image (paths or null), steps, cfg, neg_cfg,
 neg_embed_scale, seed, size, positive: {weight, start, end}, negative: {weight, start, end},
 and optionally scheduler: ddim (default) | dpmpp_2m_karras, window: steps (default) | sigma}.
Rows per method (image features are what the adapter's projection reads: CLIP image_embeds for
base, hidden_states[-2] for Plus; "no image" is IP-Adapter's: zero embeds / zero pixels):
- uncond: [uncond text + uncond image, prompt + positive image]; weights [negative, positive].
- subtract: [uncond text + no image, prompt + (f(pos) - s * f(neg))]; weights as uncond.
- three_branch, perp_neg: [empty text + no image, prompt + positive image, uncond text +
  uncond image]; weights [positive, positive, negative].
Guidance: uncond e0 + cfg (e1 - e0); three_branch e0 + cfg p - neg_cfg n; perp_neg
e0 + cfg (p - neg_cfg (n - <n,p>/|p|^2 p)), with p = e1 - e0, n = e2 - e0 over the image.
Windows: `steps`: step i of N is active iff start <= i/N < end. `sigma` (ComfyUI's
ModelSamplingDiscrete.percent_to_sigma and IPAdapter_plus' CrossAttentionPatch gate): a
fraction p is the sigma at timestep (1-p)(T-1) of the scheduler's alphas_cumprod, log-sigma
interpolated (float32), with p <= 0 -> 999999999.9 and p >= 1 -> 0; a step is active iff
sigma(end) <= sigma_i <= sigma(start), sigma_i = sqrt((1-a_t)/a_t) at the step's timestep for
DDIM, the scheduler's sigmas[i] for DPM++.
Writes `{name}.float` (the [0,1] image, [3,H,W]) and `{name}.active` ([rows, steps], 1 where
the row's branch is active).
"""
import json, os, sys
import torch
from PIL import Image
from diffusers import StableDiffusionPipeline, DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection, CLIPImageProcessor

torch.set_num_threads(2)
models, cases_path, out_path = sys.argv[1:4]
cases = json.load(open(cases_path))
encoder = CLIPVisionModelWithProjection.from_pretrained(os.path.join(models, "image_encoder")).eval()
processor = CLIPImageProcessor()


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
    pipe.base_scheduler_config = dict(pipe.scheduler.config)
    return pipe


def make_scheduler(pipe, kind):
    cfg = pipe.base_scheduler_config
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg)
    assert kind == "dpmpp_2m_karras", kind
    return DPMSolverMultistepScheduler.from_config(
        cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)


class RowScale:
    """A per-row IP scale [R,1,1] that IPAdapterAttnProcessor2_0 multiplies with."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, x):
        return self.t.to(x.dtype) * x
    __rmul__ = __mul__


def set_scales(pipe, scales):
    t = torch.tensor(scales, dtype=torch.float32).view(len(scales), 1, 1)
    for proc in pipe.unet.attn_processors.values():
        if isinstance(proc, IPAdapterAttnProcessor2_0):
            proc.scale = [RowScale(t)]


def percent_to_sigma(log_sigmas, p):
    if p <= 0.0:
        return 999999999.9
    if p >= 1.0:
        return 0.0
    t = torch.clamp(torch.tensor((1.0 - p) * (len(log_sigmas) - 1)), min=0, max=len(log_sigmas) - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp().item()


def step_sigmas(sched, kind):
    """sigma_i of each step, as the window rule sees it."""
    if kind == "ddim":
        a = sched.alphas_cumprod[sched.timesteps]
        return [s.item() for s in ((1 - a) / a) ** 0.5]
    return [s.item() for s in sched.sigmas[:len(sched.timesteps)]]


def active(branch, i, n, window, sigma, log_sigmas):
    if window == "steps":
        return branch["start"] <= i / n < branch["end"]
    high = percent_to_sigma(log_sigmas, branch["start"])
    low = percent_to_sigma(log_sigmas, branch["end"])
    return low <= sigma <= high


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


def rows(c):
    a, pos, neg = c["adapter"], c["positive"], c["negative"]
    m = c["method"]
    if m == "uncond":
        return [(c["uncond_prompt"], features(c["uncond_image"], a), neg),
                (c["prompt"], features(c["pos_image"], a), pos)]
    if m == "subtract":
        cond = features(c["pos_image"], a)
        if c["uncond_image"] is not None:
            cond = cond - c["neg_embed_scale"] * features(c["uncond_image"], a)
        return [(c["uncond_prompt"], features(None, a), neg), (c["prompt"], cond, pos)]
    return [("", features(None, a), pos), (c["prompt"], features(c["pos_image"], a), pos),
            (c["uncond_prompt"], features(c["uncond_image"], a), neg)]


def guide(c, eps):
    if c["method"] in ("uncond", "subtract"):
        e0, e1 = eps.chunk(2)
        return e0 + c["cfg"] * (e1 - e0)
    e0, e1, e2 = eps.chunk(3)
    p, n = e1 - e0, e2 - e0
    if c["method"] == "three_branch":
        return e0 + c["cfg"] * p - c["neg_cfg"] * n
    perp = n - (n * p).sum() / (p * p).sum() * p
    return e0 + c["cfg"] * (p - c["neg_cfg"] * perp)


pipes = {}
out = {}
with torch.no_grad():
    for c in cases:
        if c["adapter"] not in pipes:
            pipes[c["adapter"]] = load_pipe(c["adapter"])
        pipe = pipes[c["adapter"]]
        r = rows(c)
        text = torch.cat([pipe.encode_prompt(t, "cpu", 1, False)[0] for t, _, _ in r])
        image_embeds = [torch.cat([f for _, f, _ in r])]
        n, size = c["steps"], c["size"]
        kind, window = c.get("scheduler", "ddim"), c.get("window", "steps")
        sched = make_scheduler(pipe, kind)
        sched.set_timesteps(n)
        ac = sched.alphas_cumprod.float()
        log_sigmas = (((1 - ac) / ac) ** 0.5).log()
        sigmas = step_sigmas(sched, kind)
        on = [[active(b, i, n, window, sigmas[i], log_sigmas) for i in range(n)] for _, _, b in r]
        g = torch.Generator("cpu").manual_seed(c["seed"])
        f = pipe.vae_scale_factor
        x = torch.randn([1, 4, size // f, size // f], generator=g) * sched.init_noise_sigma
        for i, t in enumerate(sched.timesteps):
            set_scales(pipe, [b["weight"] if on[k][i] else 0.0 for k, (_, _, b) in enumerate(r)])
            x_in = sched.scale_model_input(torch.cat([x] * len(r)), t)
            eps = pipe.unet(x_in, t, encoder_hidden_states=text,
                            added_cond_kwargs={"image_embeds": image_embeds}).sample
            x = sched.step(guide(c, eps), t, x).prev_sample
        image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
        out[c["name"] + ".float"] = (image[0] / 2 + 0.5).clamp(0, 1).float().contiguous()
        out[c["name"] + ".active"] = torch.tensor(on, dtype=torch.int64)
save_file(out, out_path)
