"""What the image parity references share (tests/common/parity.rs runs them):
`SCRIPT MODELS_DIR CASES.json OUT.safetensors`, the tiny models' diffusers pipeline with an
IP-Adapter, the image features the adapter reads, per-row IP scales, the hand-written CFG
sampling loop, and writing the outputs.

Image features are what the adapter's projection reads: CLIP image_embeds for base and
light (diffusers' ImageProjection), hidden_states[-2] for plus, plus_face and full_face (its
encode_image: output_hidden_states = not ImageProjection); "no image" is IP-Adapter's: zero
embeds / zero pixels (or, with no_image = black, the features of a black image).
"""
import json, os, sys
import diffusers
import torch
from PIL import Image
from diffusers import (DiffusionPipeline, DDIMScheduler, EulerDiscreteScheduler,
                       EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler)
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModelWithProjection, CLIPImageProcessor

torch.set_num_threads(2)
models, cases_path, out_path = sys.argv[1:4]
cases = json.load(open(cases_path))
encoder = CLIPVisionModelWithProjection.from_pretrained(os.path.join(models, "image_encoder")).eval()
processor = CLIPImageProcessor()


def load_pipe(adapter, copies=1):
    """The tiny pipeline with the `adapter` (base | plus | light | plus_face | full_face)
    IP-Adapter, the models folder's file of that kind (negimg's roles::adapter_file_name), loaded by diffusers
    (`copies` times, as several IP-Adapters); `base_scheduler_config` keeps its scheduler's
    config. A models folder with `pipeline.safetensors` (a single-file checkpoint) instead of
    `pipeline/` is loaded by the pipeline class's `from_single_file`, offline, with the configs
    folder beside it (negimg's `pipeline.configs/`)."""
    folder = os.path.join(models, "pipeline")
    single = folder + ".safetensors"
    configs = folder + ".configs" if os.path.isfile(single) else folder
    index = json.load(open(os.path.join(configs, "model_index.json")))
    # StableDiffusionPipeline, or StableDiffusionXLPipeline for an SDXL set (tiny_sdxl).
    sd15 = index["_class_name"] == "StableDiffusionPipeline"
    extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False) if sd15 else {}
    if os.path.isfile(single):
        pipe = getattr(diffusers, index["_class_name"]).from_single_file(
            single, config=configs, local_files_only=True, **extra)
    else:
        pipe = DiffusionPipeline.from_pretrained(folder, **extra)
    # SD1.5's file of the kind, else SDXL's (ViT-H encoder).
    names = {"base": ["ip-adapter_sd15.safetensors", "ip-adapter_sdxl_vit-h.safetensors",
                      "ip-adapter_sdxl.safetensors"],
             "plus": ["ip-adapter-plus_sd15.safetensors", "ip-adapter-plus_sdxl_vit-h.safetensors"],
             "light": ["ip-adapter_sd15_light.safetensors"],
             "plus_face": ["ip-adapter-plus-face_sd15.safetensors",
                           "ip-adapter-plus-face_sdxl_vit-h.safetensors"],
             "full_face": ["ip-adapter-full-face_sd15.safetensors"]}
    name = next(n for n in names[adapter] if os.path.exists(os.path.join(models, n)))
    sd = {"image_proj": {}, "ip_adapter": {}}
    for key, value in load_file(os.path.join(models, name)).items():
        head, rest = key.split(".", 1)
        sd[head][rest] = value
    pipe.unet._load_ip_adapter_weights([sd] * copies, low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.base_scheduler_config = dict(pipe.scheduler.config)
    return pipe


def make_scheduler(pipe, kind):
    """A fresh scheduler of `kind` (ddim | euler | euler_ancestral | dpmpp_2m | dpmpp_2m_karras)."""
    cfg = pipe.base_scheduler_config
    if kind == "ddim":
        return DDIMScheduler.from_config(cfg)
    if kind == "euler":
        return EulerDiscreteScheduler.from_config(cfg)
    if kind == "euler_ancestral":
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    assert kind in ("dpmpp_2m", "dpmpp_2m_karras"), kind
    return DPMSolverMultistepScheduler.from_config(
        cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=kind.endswith("karras"))


class RowScale:
    """A per-row IP scale [R,1,1] that IPAdapterAttnProcessor2_0 multiplies with."""
    def __init__(self, t):
        self.t = t
    def __eq__(self, other):
        return False
    def __mul__(self, x):
        return self.t.to(x.dtype) * x
    __rmul__ = __mul__


def ip_processor(proc):
    """The IP-Adapter processor `proc` is or wraps (as `inner`), or None."""
    inner = getattr(proc, "inner", proc)
    return inner if isinstance(inner, IPAdapterAttnProcessor2_0) else None


def set_scales(pipe, scales):
    """The IP scale of each row, in every IP-Adapter processor."""
    t = torch.tensor(scales, dtype=torch.float32).view(len(scales), 1, 1)
    for proc in pipe.unet.attn_processors.values():
        ip = ip_processor(proc)
        if ip is not None:
            ip.scale = [RowScale(t)]


def at(branch, i, n):
    """The branch's weight at step i of n under the steps window rule, else 0."""
    return branch["weight"] if branch["start"] <= i / n < branch["end"] else 0.0


EMBEDS = ("base", "light")


@torch.no_grad()
def features(path, adapter, no_image="reference"):
    if path is None and no_image == "reference":
        pixels = processor(images=Image.new("RGB", (224, 224)), return_tensors="pt").pixel_values
        if adapter in EMBEDS:
            return torch.zeros_like(encoder(pixels).image_embeds)[:, None]
        return encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2][:, None]
    img = Image.new("RGB", (224, 224)) if path is None else Image.open(path).convert("RGB")
    pixels = processor(images=img, return_tensors="pt").pixel_values
    out = encoder(pixels, output_hidden_states=True)
    return out.image_embeds[:, None] if adapter in EMBEDS else out.hidden_states[-2][:, None]


def is_sdxl(pipe):
    return getattr(pipe, "text_encoder_2", None) is not None


def conditioning(pipe, rows, size, encoded_rows=(1,)):
    """The UNet's text states and added_cond_kwargs of `rows`, each (text, image features,
    ...). SDXL (StableDiffusionXLPipeline.encode_prompt): also the pooled text_embeds and
    the default time_ids (original = target = (size, size), crop (0, 0)); an empty text
    in a row not in `encoded_rows` (the cond row; NegToMe's reference row too) conditions on
    zeros (force_zeros_for_empty_prompt, as the pipeline does for a negative prompt not
    given)."""
    states, pooled = [], []
    for k, row in enumerate(rows):
        out = pipe.encode_prompt(prompt=row[0], device="cpu", num_images_per_prompt=1,
                                 do_classifier_free_guidance=False)
        s, p = out[0], (out[2] if is_sdxl(pipe) else None)
        if p is not None and row[0] == "" and k not in encoded_rows and pipe.config.force_zeros_for_empty_prompt:
            s, p = torch.zeros_like(s), torch.zeros_like(p)
        states.append(s)
        pooled.append(p)
    added = {"image_embeds": [torch.cat([row[1] for row in rows])]}
    if is_sdxl(pipe):
        added["text_embeds"] = torch.cat(pooled)
        time_ids = pipe._get_add_time_ids(
            (size, size), (0, 0), (size, size), dtype=torch.float32,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
        added["time_ids"] = time_ids.repeat(len(rows), 1)
    return torch.cat(states), added


def cfg2(c):
    """Two-row CFG: uncond e0 + cfg (e1 - e0)."""
    def guide(eps):
        e0, e1 = eps.chunk(2)
        return e0 + c["cfg"] * (e1 - e0)
    return guide


@torch.no_grad()
def sample(pipe, sched, c, rows, before_step, guide, encoded_rows=(1,)):
    """The case's seeded latents denoised over `sched`'s timesteps (set by the caller) and
    decoded to a [0,1] image [3,H,W]. `before_step(i, t, x)` sets the step's IP scales and
    returns the UNet's latent rows; `guide(eps)` combines their predictions. The seeded
    generator also feeds `step` (an ancestral scheduler's noise), as the pipeline does.
    `encoded_rows`: see `conditioning`."""
    f, size = pipe.vae_scale_factor, c["size"]
    text, added = conditioning(pipe, rows, size, encoded_rows)
    g = torch.Generator("cpu").manual_seed(c["seed"])
    x = torch.randn([1, 4, size // f, size // f], generator=g) * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(before_step(i, t, x), t)
        eps = pipe.unet(x_in, t, encoder_hidden_states=text, added_cond_kwargs=added).sample
        x = sched.step(guide(eps), t, x, generator=g).prev_sample
    image = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    return (image[0] / 2 + 0.5).clamp(0, 1).float().contiguous()


def run_cases(outputs, prepare=lambda pipe: pipe, copies=1):
    """Writes the tensors `outputs(pipe, case)` returns for every case (a dict of names) to
    OUT.safetensors; one pipeline per adapter (loaded `copies` times), passed once through
    `prepare`."""
    pipes, out = {}, {}
    with torch.no_grad():
        for c in cases:
            if c["adapter"] not in pipes:
                pipes[c["adapter"]] = prepare(load_pipe(c["adapter"], copies))
            out.update(outputs(pipes[c["adapter"]], c))
    save_file(out, out_path)
