"""Reference images for `method = "sega"` (tests/parity_sega.rs): diffusers' own
SemanticStableDiffusionPipeline (SEGA, Brack et al. 2023), its negative image entering as the
one editing concept with `reverse_editing_direction=True`.

usage: sega_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: a list of common_ref's cases with `sega`: {guidance_scale, threshold,
 warmup_steps, cooldown_steps (null: never), momentum_scale, mom_beta} (the pipeline's
 edit_guidance_scale, edit_threshold, edit_warmup_steps, edit_cooldown_steps,
 edit_momentum_scale, edit_mom_beta) and `scheduler` (common_ref.make_scheduler's kinds).
Rows, as the pipeline orders them: [empty text + "no image", prompt + positive image,
uncond text + uncond image (the concept)], IP scales [positive, positive, negative] under the
steps window rule, set before step 0 and by the pipeline's callback after each step. The
pipeline runs its UNet without IP-Adapter inputs, so the UNet's forward is given the three
rows' image features for the call.
Writes `{name}.float` (the [0,1] image, [3,H,W]).
"""

import os, sys
import torch
from diffusers.pipelines.deprecated.semantic_stable_diffusion.pipeline_semantic_stable_diffusion import (
    SemanticStableDiffusionPipeline)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common_ref import at, features, make_scheduler, run_cases, set_scales


def outputs(pipe, c):
    a, n, s = c["adapter"], c["steps"], c["sega"]
    rows = [(features(None, a), c["positive"]), (features(c["pos_image"], a), c["positive"]),
            (features(c["uncond_image"], a), c["negative"])]
    image_embeds = [torch.cat([f for f, _ in rows])]
    sega = SemanticStableDiffusionPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=make_scheduler(pipe, c["scheduler"]), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    sega.set_progress_bar_config(disable=True)
    forward = pipe.unet.forward
    pipe.unet.forward = lambda *args, **kw: forward(
        *args, added_cond_kwargs={"image_embeds": image_embeds}, **kw)
    scales = [[at(b, i, n) for _, b in rows] for i in range(n)]
    set_scales(pipe, scales[0])

    def callback(i, t, latents):
        if i + 1 < n:
            set_scales(pipe, scales[i + 1])

    concept = pipe.encode_prompt(c["uncond_prompt"], "cpu", 1, False)[0]
    try:
        image = sega(prompt=c["prompt"], negative_prompt="", editing_prompt_embeddings=concept,
                     reverse_editing_direction=True, edit_guidance_scale=s["guidance_scale"],
                     edit_threshold=s["threshold"], edit_warmup_steps=s["warmup_steps"],
                     edit_cooldown_steps=s["cooldown_steps"],
                     edit_momentum_scale=s["momentum_scale"], edit_mom_beta=s["mom_beta"],
                     num_inference_steps=n, guidance_scale=c["cfg"], height=c["size"],
                     width=c["size"], generator=torch.Generator("cpu").manual_seed(c["seed"]),
                     output_type="pt", callback=callback, callback_steps=1).images
    finally:
        del pipe.unet.forward
    return {c["name"] + ".float": image[0].float().contiguous()}


run_cases(outputs)
