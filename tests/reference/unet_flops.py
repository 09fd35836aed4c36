"""FLOPs of one UNet row by torch's FlopCounterMode, for tests/sdxl_conf.rs (the plan's
count from the config, src/models/unet_flops.rs).
usage: unet_flops.py CASES.json
CASES.json: a list of {name, config (a UNet2DConditionModel config dict), h, w (latent),
text_tokens}. The model is built on the meta device (no weights, no memory) with diffusers'
plain AttnProcessor (explicit baddbmm/bmm attention products, which FlopCounterMode counts);
one row: latents [1, in, h, w], text [1, text_tokens, cross], SDXL's pooled text and time
ids where the config has addition_embed_type "text_time".
Prints one JSON object {name: flops}.
"""
import json, sys
import torch
from torch.utils.flop_counter import FlopCounterMode
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor

out = {}
for case in json.load(open(sys.argv[1])):
    cfg = case["config"]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
        unet.set_attn_processor(AttnProcessor())
        cross = cfg["cross_attention_dim"]
        cross = cross if isinstance(cross, int) else cross[0]
        x = torch.randn(1, cfg["in_channels"], case["h"], case["w"])
        text = torch.randn(1, case["text_tokens"], cross)
        added = None
        if cfg.get("addition_embed_type") == "text_time":
            pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
            added = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(x, torch.tensor([10]), text, added_cond_kwargs=added)
    out[case["name"]] = counter.get_total_flops()
print(json.dumps(out))
