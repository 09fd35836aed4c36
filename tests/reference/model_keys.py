"""Reference for the SD1.5-shape key tests: the state-dict keys and shapes of the diffusers model
built (on the meta device, no memory) from a config.json that negimg wrote.
usage: model_keys.py unet|vae CONFIG.json OUT.json
out: {"shapes": {key: shape}, "cross_attention": [attn2 names in attn_processors order]}
"""
import json
import sys
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

kind, config_path, out_path = sys.argv[1:4]
cls = {"unet": UNet2DConditionModel, "vae": AutoencoderKL}[kind]
with torch.device("meta"):
    model = cls.from_config(cls.load_config(config_path))
shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
cross = [n[: -len(".processor")] for n in getattr(model, "attn_processors", {}) if n.endswith("attn2.processor")]
json.dump({"shapes": shapes, "cross_attention": cross}, open(out_path, "w"))
