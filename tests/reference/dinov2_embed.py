"""Reference DINOv2 embeddings: transformers' Dinov2Model + BitImageProcessor.

usage: dinov2_embed.py MODEL_DIR OUT.safetensors IMAGE...
Loads MODEL_DIR with Dinov2Model.from_pretrained (failing on missing or unexpected keys),
preprocesses the images with the folder's BitImageProcessor and writes `pooler_output`
(the final-norm CLS token) [N, D] and `pixel_values` [N, 3, 224, 224].
"""
import sys

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import BitImageProcessor, Dinov2Model

model_dir, out_path, images = sys.argv[1], sys.argv[2], sys.argv[3:]
model, info = Dinov2Model.from_pretrained(model_dir, output_loading_info=True)
bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
if bad:
    sys.exit(f"{model_dir}: the layout does not match transformers' Dinov2Model: {bad}")
model.eval()
processor = BitImageProcessor.from_pretrained(model_dir)
imgs = [Image.open(p).convert("RGB") for p in images]
pixels = processor(images=imgs, return_tensors="pt").pixel_values
with torch.no_grad():
    pooled = model(pixel_values=pixels).pooler_output
save_file({"pooler_output": pooled.contiguous(), "pixel_values": pixels.contiguous()}, out_path)
print(f"embedded {len(imgs)} images")
