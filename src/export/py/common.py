import argparse, base64, hashlib, io, math, os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler,
                       EulerAncestralDiscreteScheduler, EulerDiscreteScheduler,
                       StableDiffusionPipeline, StableDiffusionXLPipeline)
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

torch.set_grad_enabled(False)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---- models -------------------------------------------------------------------------------

def where(model):
    """A model's local folder, or its hub repo and the from_pretrained arguments."""
    if "path" in model:
        return model["path"], {}
    if model["subfolder"] and model["role"] == "pipeline":
        from huggingface_hub import snapshot_download
        root = snapshot_download(model["repo"], revision=model["revision"],
                                 allow_patterns=[model["subfolder"] + "/*"])
        return os.path.join(root, model["subfolder"]), {}
    kw = {"revision": model["revision"]}
    if model["subfolder"]:
        kw["subfolder"] = model["subfolder"]
    return model["repo"], kw


def model_file(model):
    """A one-file model's local file (an adapter, a single-file pipeline)."""
    if "path" in model:
        return model["path"]
    from huggingface_hub import hf_hub_download
    return hf_hub_download(model["repo"], model["subfolder"], revision=model["revision"])


def configs_folder(model):
    """The folder of a single-file pipeline's configs, beside this script (negimg export
    wrote there the configs, tokenizers and scheduler negimg maps the file with)."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), model["configs"])
    if not os.path.isdir(folder):
        raise SystemExit(f"{model['reference']}: the configs folder {folder} is missing "
                         "(negimg export writes it beside the script)")
    return folder


def check_files():
    """Each file of a local model against the sha256 negimg recorded (hub models are fetched
    by their reference and revision): a missing or changed file is refused, naming it."""
    for model in MODELS.values():
        if "path" not in model:
            continue
        for name, want in model["sha256"].items():
            f = os.path.join(model["path"], name) if name else model["path"]
            what = f"{model['role']} {model['reference']}"
            if not os.path.isfile(f):
                raise SystemExit(f"{what}: {f} is missing (edit MODELS to point at your copy)")
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != want:
                raise SystemExit(
                    f"{what} changed since the run: {f} (sha256 {want[:12]} in the run, "
                    f"{h.hexdigest()[:12]} now); pass --no-check to make the image anyway")


def load_pipeline(dtype):
    """StableDiffusionXLPipeline for an SDXL cell, else StableDiffusionPipeline, with MODELS'
    VAE: from its folder, or a single file by from_single_file with its configs folder."""
    model = MODELS["pipeline"]
    cls = StableDiffusionXLPipeline if CELL["sdxl"] else StableDiffusionPipeline
    kw = {} if CELL["sdxl"] else dict(safety_checker=None, feature_extractor=None,
                                      requires_safety_checker=False)
    vae = None
    if "vae" in MODELS:
        path, vkw = where(MODELS["vae"])
        vae = AutoencoderKL.from_pretrained(path, torch_dtype=dtype, **vkw)
    if "configs" in model:
        if vae is not None:
            kw["vae"] = vae  # a file without its own VAE loads too
        return cls.from_single_file(model_file(model), config=configs_folder(model),
                                    local_files_only=True, torch_dtype=dtype, **kw)
    path, pkw = where(model)
    if model.get("variant"):
        pkw["variant"] = model["variant"]
    pipe = cls.from_pretrained(path, torch_dtype=dtype, **pkw, **kw)
    if vae is not None:
        pipe.vae = vae
    return pipe


def load(device, dtype):
    """The pipeline (with MODELS' VAE and IP-Adapter) and the image encoder on `device`."""
    pipe = load_pipeline(dtype)
    f = model_file(MODELS["ip_adapter"])
    k = len(ADAPTER_TERMS)
    pipe.load_ip_adapter([os.path.dirname(f) or "."] * k, subfolder=[""] * k,
                         weight_name=[os.path.basename(f)] * k, image_encoder_folder=None)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    path, kw = where(MODELS["image_encoder"])
    encoder = CLIPVisionModelWithProjection.from_pretrained(path, **kw).to(device, dtype).eval()
    return pipe, encoder


# ---- image prompts ------------------------------------------------------------------------

def picture(name):
    """An input image of the cell (the PNG negimg read, embedded below)."""
    return Image.open(io.BytesIO(base64.b64decode(IMAGES[name]))).convert("RGB")


class ImageFeatures:
    """What the adapter's projection reads: CLIP image_embeds (base, light) or the penultimate
    hidden states (plus, plus_face, full_face). "No image" is IP-Adapter's (zero embeds, zero pixels) or, with
    no_image = black, the features of a black image."""

    def __init__(self, encoder, device, dtype):
        self.encoder, self.device, self.dtype = encoder, device, dtype
        s = encoder.config.image_size
        self.size = s
        self.processor = CLIPImageProcessor(size={"shortest_edge": s},
                                            crop_size={"height": s, "width": s})

    def pixels(self, img):
        p = self.processor(images=img, return_tensors="pt").pixel_values
        return p.to(self.device, self.dtype)

    def __call__(self, img):
        base = CELL["adapter"] in ("base", "light")  # ImageProjection reads image_embeds
        if img is None and CELL["no_image"] == "reference":
            p = self.pixels(Image.new("RGB", (self.size, self.size)))
            if base:
                return torch.zeros_like(self.encoder(p).image_embeds)
            return self.encoder(torch.zeros_like(p), output_hidden_states=True).hidden_states[-2]
        if img is None:
            img = Image.new("RGB", (self.size, self.size))
        out = self.encoder(self.pixels(img), output_hidden_states=True)
        return out.image_embeds if base else out.hidden_states[-2]

    def row(self, spec):
        """A row's features: none ("no image"), an input image, or the subtract method's
        e(positive) - scale * e(negative)."""
        if spec is None:
            return self(None)
        if isinstance(spec, str):
            return self(picture(spec))
        s = spec["subtract"]
        positive = self(None if s["positive"] is None else picture(s["positive"]))
        return positive - s["scale"] * self(picture(s["negative"]))


# ---- per-row, per-block IP weights (diffusers has one scale per adapter) -----------------
# Each image-attention term of a row is one loaded adapter: the row's own ("image"), and
# where a row has a second term ("extra": cond_negative's negative tokens at -neg_weight,
# with their own softmax) the same adapter file loaded again.
ADAPTER_TERMS = [lambda row: row] + ([lambda row: row["extra"]]
                                     if any(r["extra"] for r in ROWS) else [])


def term_image(term):
    """A term's image tokens (ImageFeatures.row's spec): "no image" for a row without it."""
    return None if term is None else term["image"]


def term_weight(term, i, n, sigma, log_sigmas):
    """A term's signed weight at step i: its branch's weight inside its window; 0 for a row
    without the term."""
    if term is None:
        return 0.0
    return term.get("sign", 1.0) * weight_at(term["branch"], i, n, sigma, log_sigmas)


class RowScale:
    """A scale per row [R,1,1] where IPAdapterAttnProcessor2_0 multiplies by its scale."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, x):
        return self.t.to(x.dtype) * x
    __rmul__ = __mul__


class ScaledIPProcessor:
    """Decoupled cross-attention whose image part takes the weight w as ComfyUI's
    embeds_scaling: v: w Attn(q, K, V) (IPAdapterAttnProcessor2_0's); kv: Attn(q, wK, wV);
    kv_c: the same with w' = w C/1280 (C the keys' width); k_mean_v_c: Attn(q, w'K,
    (V - m) + w'm), m the mean of V over the image tokens. `join` makes the output before
    to_out from the text attention and the image terms (ADAPTER_TERMS): their sum, or NAG's."""
    def __init__(self, ip_proc, mode, join):
        self.to_k_ip, self.to_v_ip = ip_proc.to_k_ip, ip_proc.to_v_ip
        self.mode, self.join, self.w = mode, join, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):
        text, ips = encoder_hidden_states
        b, heads = hidden_states.shape[0], attn.heads

        def attend(q, k, v):
            split = lambda x: x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)
            out = F.scaled_dot_product_attention(split(q), split(k), split(v))
            return out.transpose(1, 2).reshape(b, -1, q.shape[-1])

        def image_term(ip, to_k, to_v, w):
            ip = ip.reshape(b, -1, ip.shape[-1])
            k, v = to_k(ip), to_v(ip)
            w = w.to(k.dtype)
            if self.mode == "v":
                return attend(q, k, v) * w
            if self.mode == "kv":
                return attend(q, k * w, v * w)
            w = w * (k.shape[2] / 1280.0)
            if self.mode == "kv_c":
                return attend(q, k * w, v * w)
            m = v.mean(dim=1, keepdim=True)
            return attend(q, k * w, (v - m) + m * w)

        q = attn.to_q(hidden_states)
        out = attend(q, attn.to_k(text), attn.to_v(text))
        terms = [image_term(*a) for a in zip(ips, self.to_k_ip, self.to_v_ip, self.w)]
        return attn.to_out[1](attn.to_out[0](self.join(out, terms, self.w)))


def sum_terms(text, terms, weights):
    """A cross-attention's output before to_out: the text attention plus each image term."""
    out = text
    for term in terms:
        out = out + term
    return out


def transformers_in_execution_order(unet):
    """The attn2 processor names of each Transformer2DModel: down blocks, mid, up blocks
    (ComfyUI's transformer_index; SD1.5 has 16, SDXL 11)."""
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


class IPWeights:
    """Installs the image-attention processors of CELL's ip_scaling (diffusers' own for v,
    unless the cell's join_terms, NAG's, replaces the sum of the terms) and sets, at each
    step, every row's weight in every block: the row's branch weight where its window is
    active, times the branch's factor for the block."""

    def __init__(self, unet):
        procs = dict(unet.attn_processors)
        mode = CELL["ip_scaling"]
        if mode != "v" or join_terms is not None:
            join = join_terms or sum_terms
            procs = {n: ScaledIPProcessor(p, mode, join) if isinstance(p, IPAdapterAttnProcessor2_0)
                     else p for n, p in procs.items()}
            unet.set_attn_processor(dict(procs))
        self.blocks = [[procs[n] for n in names] for names in transformers_in_execution_order(unet)]

    def factor(self, term, j):
        pairs = None if term is None else term["blocks"]
        return 1.0 if pairs is None else dict((i, w) for i, w in pairs).get(j, 0.0)

    def set(self, weights, device, extra_rows=0):
        """`weights[a][k]`: the weight of row k's term a (ADAPTER_TERMS) at this step;
        `extra_rows` more rows at 0."""
        for j, procs in enumerate(self.blocks):
            ts = []
            for term, ws in zip(ADAPTER_TERMS, weights):
                scales = [w * self.factor(term(row), j) for w, row in zip(ws, ROWS)]
                scales += [0.0] * extra_rows
                ts.append(torch.tensor(scales, dtype=torch.float32, device=device).view(-1, 1, 1))
            for p in procs:
                if isinstance(p, ScaledIPProcessor):
                    p.w = ts
                else:
                    p.scale = [RowScale(t) for t in ts]


# ---- windows ------------------------------------------------------------------------------

def percent_to_sigma(log_sigmas, p):
    """ComfyUI's percent_to_sigma: the sigma at training timestep (1 - p)(T - 1), log-linear."""
    if p <= 0.0:
        return 999999999.9
    if p >= 1.0:
        return 0.0
    t = torch.clamp(torch.tensor((1.0 - p) * (len(log_sigmas) - 1)), min=0, max=len(log_sigmas) - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp().item()


def step_sigmas(sched):
    """Each step's noise level: sqrt((1 - a_t) / a_t) for DDIM, the scheduler's sigma else."""
    if CELL["scheduler"] == "ddim":
        a = sched.alphas_cumprod[sched.timesteps]
        return [s.item() for s in ((1 - a) / a) ** 0.5]
    return [s.item() for s in sched.sigmas[:len(sched.timesteps)]]


def weight_at(branch, i, n, sigma, log_sigmas):
    """The branch's weight at step i of n, 0 outside its window (CELL's window rule)."""
    if CELL["window"] == "steps":
        on = branch["start"] <= i / n < branch["end"]
    else:
        high = percent_to_sigma(log_sigmas, branch["start"])
        low = percent_to_sigma(log_sigmas, branch["end"])
        on = low <= sigma <= high
    return branch["weight"] if on else 0.0


# ---- sampling -----------------------------------------------------------------------------

def make_scheduler(pipe):
    cfg = pipe.scheduler.config
    kind = CELL["scheduler"]
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg)
    if kind == "euler":
        return EulerDiscreteScheduler.from_config(cfg)
    if kind == "euler_ancestral":
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    return DPMSolverMultistepScheduler.from_config(
        cfg, algorithm_type="dpmsolver++", solver_order=2,
        use_karras_sigmas=kind == "dpmpp_2m_karras")


def encode_text(pipe, text, device):
    """A text's states [1,77,C] and, on SDXL, its pooled projection [1,P]
    (StableDiffusionXLPipeline.encode_prompt: both encoders' penultimate states joined)."""
    if not CELL["sdxl"]:
        return pipe.encode_prompt(text, device, 1, False)[0], None
    states, _, pooled, _ = pipe.encode_prompt(
        prompt=text, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
    return states, pooled


def time_ids(pipe, micro):
    """A row's add_time_ids [1,6] from its micro-conditioning, as the SDXL pipeline makes them."""
    return pipe._get_add_time_ids(
        tuple(micro["original_size"]), tuple(micro["crops_coords_top_left"]),
        tuple(micro["target_size"]), dtype=torch.float32,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)


def text_rows(pipe, device):
    """ROWS' text conditioning: {"states": [R,77,C]} and, on SDXL, "pooled" [R,P] and
    "time_ids" [R,6] (each row's micro-conditioning). With force_zeros_for_empty_prompt
    (model_index.json), an empty text outside the cond row conditions on zeros, as
    StableDiffusionXLPipeline does for a negative prompt not given."""
    encoded = [encode_text(pipe, r["text"], device) for r in ROWS]
    if not CELL["sdxl"]:
        return {"states": torch.cat([s for s, _ in encoded])}
    zeros = lambda r: (pipe.config.force_zeros_for_empty_prompt and r["text"] == ""
                       and r["row"] != "cond")
    rows = [tuple(map(torch.zeros_like, e)) if zeros(r) else e for e, r in zip(encoded, ROWS)]
    return {"states": torch.cat([s for s, _ in rows]), "pooled": torch.cat([p for _, p in rows]),
            "time_ids": torch.cat([time_ids(pipe, r["micro"]) for r in ROWS]).to(device)}


def cat_rows(a, b):
    """Text conditionings `a` then `b`, key by key."""
    return {k: torch.cat([a[k], b[k]]) for k in a}


def added_cond(text, embeds, dtype):
    """The UNet's added_cond_kwargs: the image features of each adapter term and, on SDXL,
    the pooled text (text_embeds) and time_ids."""
    kw = {"image_embeds": [e.to(dtype) for e in embeds]}
    if "pooled" in text:
        kw.update(text_embeds=text["pooled"].to(dtype), time_ids=text["time_ids"].to(dtype))
    return kw


def decode(pipe, x):
    """Latents to a [0,1] image [3,H,W]; in fp32 again where the dtype gives NaN (as negimg)."""
    z = x / pipe.vae.config.scaling_factor
    img = pipe.vae.decode(z.to(pipe.vae.dtype)).sample.float()
    if not torch.isfinite(img).all():
        img = pipe.vae.to(torch.float32).decode(z.float()).sample
    return (img[0] / 2 + 0.5).clamp(0, 1)


def generate(device, dtype):
    pipe, encoder = load(device, dtype)
    features = ImageFeatures(encoder, device, dtype)
    weights = IPWeights(pipe.unet)
    merge = prepare_merge(pipe, features, device, dtype)
    text = text_rows(pipe, device)
    embeds = [torch.cat([features.row(term_image(term(r))) for r in ROWS])[:, None]
              for term in ADAPTER_TERMS]
    sched = make_scheduler(pipe)
    sched.set_timesteps(CELL["steps"])
    ac = sched.alphas_cumprod.float()
    log_sigmas = (((1 - ac) / ac) ** 0.5).log()
    sigmas = step_sigmas(sched)
    f = pipe.vae_scale_factor
    g = torch.Generator("cpu").manual_seed(CELL["seed"])
    x = torch.randn([1, 4, CELL["height"] // f, CELL["width"] // f], generator=g)
    x = (x * sched.init_noise_sigma).to(device)
    n, r = CELL["steps"], len(ROWS)
    for i, t in enumerate(sched.timesteps):
        x_in = torch.cat([sched.scale_model_input(x, t)] * r)
        ws = [[term_weight(term(row), i, n, sigmas[i], log_sigmas) for row in ROWS]
              for term in ADAPTER_TERMS]
        rows_in, rows_text, rows_embeds = merge(i, t, sched, x_in, text, embeds)
        weights.set(ws, device, extra_rows=rows_in.shape[0] - r)
        eps = pipe.unet(rows_in.to(dtype), t, encoder_hidden_states=rows_text["states"].to(dtype),
                        added_cond_kwargs=added_cond(rows_text, rows_embeds, dtype)).sample
        # The generator feeds the ancestral scheduler's step noise, after the initial latents.
        x_next = sched.step(guide(eps[:r].float(), i), t, x, generator=g).prev_sample
        after_step(sched, i, x, x_next)
        x = x_next
    return decode(pipe, x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=CELL["out"])
    ap.add_argument("--device", default=CELL["device"])
    ap.add_argument("--dtype", default=CELL["dtype"], choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the sha256 check of local model files against the run's")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if not a.no_check:
        check_files()
    image = generate(torch.device(a.device), DTYPES[a.dtype])
    u8 = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(u8).save(a.out)
    print(a.out)
