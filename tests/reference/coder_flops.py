"""FLOPs of the VAE's decoder and encoder and of the CLIP image encoder by torch's
FlopCounterMode, for tests/sdxl_conf.rs (bench's counts from the configs,
src/models/coder_flops.rs).
usage: coder_flops.py CASES.json
CASES.json: a list of {name, model ("vae_decode" | "vae_encode" | "vision"), config (an
AutoencoderKL or CLIPVisionConfig dict), h, w}: the latent size to decode, the image size to
encode (the vision encoder reads one image of its config's size). Models are built on the
meta device (no weights, no memory); the VAE with diffusers' plain AttnProcessor and CLIP
with eager attention (explicit matrix products, which FlopCounterMode counts). Decode is
AutoencoderKL.decode (post_quant_conv and the decoder), encode AutoencoderKL.encode (the
encoder and quant_conv), vision CLIPVisionModelWithProjection's forward.
Prints one JSON object {name: flops}.
"""
import json, sys
import torch
from torch.utils.flop_counter import FlopCounterMode
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

out = {}
for case in json.load(open(sys.argv[1])):
    cfg, model = case["config"], case["model"]
    with torch.device("meta"), torch.no_grad():
        if model == "vision":
            config = CLIPVisionConfig(**cfg)
            config._attn_implementation = "eager"
            net = CLIPVisionModelWithProjection(config)
            s = config.image_size
            run = lambda: net(torch.randn(1, config.num_channels, s, s))
        else:
            vae = AutoencoderKL.from_config(cfg)
            vae.set_attn_processor(AttnProcessor())
            if model == "vae_decode":
                z = torch.randn(1, vae.config.latent_channels, case["h"], case["w"])
                run = lambda: vae.decode(z)
            else:
                x = torch.randn(1, vae.config.in_channels, case["h"], case["w"])
                run = lambda: vae.encode(x)
        with FlopCounterMode(display=False) as counter:
            run()
    out[case["name"]] = counter.get_total_flops()
print(json.dumps(out))
