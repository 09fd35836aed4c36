"""Reference images from diffusers' StableDiffusionPipeline (or StableDiffusionXLPipeline on an
SDXL set) + IP-Adapter, for tests/parity_pipeline.rs and tests/parity_sdxl.rs.

usage: pipeline_parity.py MODELS_DIR CASES.json OUT.safetensors
MODELS_DIR: a `negimg models init-random` folder. CASES.json: a list of
{name, prompt, uncond_prompt, pos_image, uncond_image (paths or null), adapter: base|plus,
 scheduler: ddim|euler|euler_ancestral|dpmpp_2m|dpmpp_2m_karras, steps, cfg, seed, size, no_image: reference|black,
 positive: {weight, start, end}, negative: {weight, start, end}}; SDXL cases may add
 original_size, crops_coords_top_left, target_size and negative_original_size,
 negative_crops_coords_top_left, negative_target_size ([a, b], passed to the pipeline as
 tuples; the negative ones all three or none).
Image embeddings (common_ref.py's features) enter the pipeline as
ip_adapter_image_embeds=[cat([uncond, cond])]. The IP scale of each CFG row (uncond, cond) at
each step follows the window rule "step i of N is active iff
start <= i/N < end", set before step 0 and by callback_on_step_end after each step.
Writes `{name}.float` (the [0,1] image before 8-bit rounding, [3,H,W]) and `{name}.u8`.
"""

import os, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import at, features, make_scheduler, run_cases, set_scales


def outputs(pipe, c):
    pipe.scheduler = make_scheduler(pipe, c["scheduler"])
    n = c["steps"]
    pos, neg = c["positive"], c["negative"]
    # an explicit per-step [uncond, cond] schedule (to model the demo's defects) wins
    schedule = c.get("schedule") or [[at(neg, i, n), at(pos, i, n)] for i in range(n)]
    set_scales(pipe, schedule[0])

    def callback(p, i, t, kwargs):
        if i + 1 < n:
            set_scales(p, schedule[i + 1])
        return kwargs

    ip = torch.cat([features(c["uncond_image"], c["adapter"], c["no_image"]),
                    features(c["pos_image"], c["adapter"], c["no_image"])])
    # An empty negative prompt is given as None: StableDiffusionPipeline encodes "" either
    # way; StableDiffusionXLPipeline then conditions on zeros (force_zeros_for_empty_prompt).
    micro = {k: tuple(int(x) for x in c[k])
             for k in ("original_size", "crops_coords_top_left", "target_size",
                       "negative_original_size", "negative_crops_coords_top_left",
                       "negative_target_size") if k in c}
    image = pipe(prompt=c["prompt"], negative_prompt=c["uncond_prompt"] or None, ip_adapter_image_embeds=[ip],
                 **micro,
                 num_inference_steps=n, guidance_scale=c["cfg"], height=c["size"], width=c["size"],
                 generator=torch.Generator("cpu").manual_seed(c["seed"]), output_type="pt",
                 callback_on_step_end=callback).images
    u8 = (image.permute(0, 2, 3, 1).float().numpy() * 255).round().astype("uint8")
    return {c["name"] + ".float": image[0].float().contiguous(),
            c["name"] + ".u8": torch.from_numpy(u8[0]).permute(2, 0, 1).long().contiguous()}


run_cases(outputs)
