"""Reference images for `method = "cond_negative"` (tests/parity_cond_negative.rs): diffusers'
own StableDiffusionPipeline with the same IP-Adapter file loaded twice and scales
[weight, -neg_weight] (as ComfyUI users chain two IPAdapter nodes, the second at a negative
weight). Adapter 1 takes the positive image, adapter 2 the negative image; both take the
"no image" features in the uncond row (diffusers' `ip_adapter_image_embeds` with classifier-
free guidance: [uncond, cond] per adapter). DDIM, full windows.

usage: cond_negative_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of {name, adapter: base|plus, prompt, uncond_prompt, pos_image,
 uncond_image (paths or null), steps, cfg, seed, size, positive: {weight}, negative: {weight}}.
Writes `{name}.float` (the [0,1] image, [3,H,W]).
"""

import os, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import features, make_scheduler, run_cases


def outputs(pipe, c):
    a = c["adapter"]
    none = features(None, a)
    embeds = [torch.cat([none, features(c["pos_image"], a)])]
    if c["uncond_image"] is not None:
        embeds.append(torch.cat([none, features(c["uncond_image"], a)]))
        pipe.set_ip_adapter_scale([c["positive"]["weight"], -c["negative"]["weight"]])
    else:
        pipe.set_ip_adapter_scale([c["positive"]["weight"], 0.0])
        embeds.append(torch.cat([none, none]))
    pipe.scheduler = make_scheduler(pipe, "ddim")
    image = pipe(prompt=c["prompt"], negative_prompt=c["uncond_prompt"],
                 ip_adapter_image_embeds=embeds, num_inference_steps=c["steps"],
                 guidance_scale=c["cfg"], height=c["size"], width=c["size"],
                 generator=torch.Generator("cpu").manual_seed(c["seed"]),
                 output_type="pt").images[0]
    return {c["name"] + ".float": image.float().contiguous()}


run_cases(outputs, copies=2)
