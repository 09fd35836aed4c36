"""Reference for tests/parity_vae.rs: diffusers' AutoencoderKL on the folder the Rust test wrote.
usage: vae_parity.py VAE_DIR INPUTS.safetensors OUT.safetensors
inputs: latents [B,4,h,w], images [B,3,H,W]; out: decoded [B,3,H',W'], mean [B,4,h',w'] (latent_dist.mean)
"""
import sys
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

vae_dir, inputs_path, out_path = sys.argv[1:4]
x = load_file(inputs_path)
vae = AutoencoderKL.from_pretrained(vae_dir).eval()
with torch.no_grad():
    out = {"decoded": vae.decode(x["latents"]).sample, "mean": vae.encode(x["images"]).latent_dist.mean}
save_file({k: v.contiguous() for k, v in out.items()}, out_path)
