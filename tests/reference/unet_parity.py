"""Reference for tests/parity_unet.rs: diffusers' UNet2DConditionModel on the folder the Rust
test wrote, with and without the IP-Adapter loaded through `_load_ip_adapter_weights`.
usage: unet_parity.py UNET_DIR ADAPTER.safetensors INPUTS.safetensors OUT.safetensors
inputs: latents [B,4,h,w], text [B,M,cross], image_embeds [B,1,E], scales [B], timesteps [B], t [1],
        and for an SDXL (text_time) UNet text_embeds [B,P], time_ids [B,6]
out: tokens [B,T,cross] (the adapter's image projection of image_embeds),
     eps_ip [B,...] (row b computed with IP scale scales[b] at timestep t),
     eps_plain [B,...] (no adapter, per-row timesteps)
"""
import sys
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from safetensors.torch import load_file, save_file

unet_dir, adapter_path, inputs_path, out_path = sys.argv[1:5]
torch.manual_seed(0)
x = load_file(inputs_path)
unet = UNet2DConditionModel.from_pretrained(unet_dir).eval()
out = {}
added = {k: x[k] for k in ("text_embeds", "time_ids") if k in x}
with torch.no_grad():
    out["eps_plain"] = unet(x["latents"], x["timesteps"], encoder_hidden_states=x["text"],
                            added_cond_kwargs=added or None).sample

    flat = load_file(adapter_path)
    sd = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, rest = key.split(".", 1)
        sd[head][rest] = value
    unet._load_ip_adapter_weights([sd], low_cpu_mem_usage=False)
    image_embeds = [x["image_embeds"]]
    # [B, 1 image, T, cross] -> [B, T, cross]: the tokens the Rust UNet takes.
    out["tokens"] = unet.encoder_hid_proj(image_embeds)[0][:, 0]
    rows = []
    t = float(x["t"][0])
    for b, scale in enumerate(x["scales"].tolist()):
        for proc in unet.attn_processors.values():
            if isinstance(proc, IPAdapterAttnProcessor2_0):
                proc.scale = [scale]
        eps = unet(x["latents"], t, encoder_hidden_states=x["text"],
                   added_cond_kwargs={"image_embeds": image_embeds, **added}).sample
        rows.append(eps[b])  # batch rows are independent: keep the row this scale is for
    out["eps_ip"] = torch.stack(rows)
save_file({k: v.contiguous() for k, v in out.items()}, out_path)
