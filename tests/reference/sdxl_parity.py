"""Reference images for the SDXL parity of the negative methods, windows, block presets and
IP scalings (tests/parity_sdxl_methods.rs) in one process: each case is computed by the
SD1.5 tests' own reference, methods_parity.py (`"ref": "methods"`) or blocks_parity.py
(`"ref": "blocks"`), whose sampling loop (common_ref.py) conditions SDXL's UNet as
StableDiffusionXLPipeline does (both text encoders, pooled text_embeds, time_ids).

usage: sdxl_parity.py MODELS_DIR CASES.json OUT.safetensors
CASES.json: the cases of those two scripts, each with a "ref" key.
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blocks_parity
import methods_parity
from common_ref import run_cases


def outputs(pipe, c):
    if c["ref"] == "blocks":
        return blocks_parity.outputs(pipe, c)
    # methods_parity sets the scales of diffusers' own IP processors.
    blocks_parity.set_scaling(pipe, "v")
    return methods_parity.outputs(pipe, c)


run_cases(outputs, blocks_parity.prepare)
