"""Reference scheduler trajectories from diffusers, for tests/parity_scheduler.rs.

usage: sched_trajectories.py CASES.json OUT.safetensors
CASES.json: [{"name", "kind": ddim|euler|euler_ancestral|dpmpp_2m|dpmpp_2m_karras, "steps", "config": {...}}]
For each case: a fixed random initial noise and model-output sequence (saved), and what
diffusers does with them the way StableDiffusionPipeline drives a scheduler. An ancestral
scheduler draws its step noise from a generator passed to `step`; a twin generator draws the
same tensors, saved as `{name}.noise`. Each step's x̂₀ is saved as `{name}.x0`: DDIM's, Euler's
and Euler ancestral's `pred_original_sample`; DPM-Solver++'s step returns none, so its x̂₀ is
the data prediction its step uses, `convert_model_output` (called at the step's index).
"""
import json, sys
import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
                       DPMSolverMultistepScheduler)
from safetensors.torch import save_file

cases = json.load(open(sys.argv[1]))
out = {}
for case in cases:
    cfg, kind, n, name = case["config"], case["kind"], case["steps"], case["name"]
    if kind == "ddim":
        s = DDIMScheduler.from_config(cfg)
    elif kind == "euler":
        s = EulerDiscreteScheduler.from_config(cfg)
    elif kind == "euler_ancestral":
        s = EulerAncestralDiscreteScheduler.from_config(cfg)
    else:
        s = DPMSolverMultistepScheduler.from_config(
            cfg, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=kind.endswith("karras"))
    s.set_timesteps(n)
    g = torch.Generator("cpu").manual_seed(len(out))
    shape = (2, 4, 8, 8)
    x_t = torch.randn(shape, generator=g)
    eps = torch.randn((n,) + shape, generator=g)
    x = x_t * s.init_noise_sigma
    inputs, traj, noise, x0 = [], [x], [], []
    step_gen, twin = (torch.Generator("cpu").manual_seed(1000 + len(out)) for _ in range(2))
    for i, t in enumerate(s.timesteps):
        inputs.append(s.scale_model_input(x, t))
        if kind.startswith("dpmpp"):
            if s.step_index is None:
                s._init_step_index(t)
            x0.append(s.convert_model_output(eps[i], sample=x))
        step = s.step(eps[i], t, x, generator=step_gen)
        x = step.prev_sample
        if getattr(step, "pred_original_sample", None) is not None:
            x0.append(step.pred_original_sample)
        noise.append(torch.randn(shape, generator=twin))
        traj.append(x)
    if kind == "euler_ancestral":
        out[f"{name}.noise"] = torch.stack(noise)
    if x0:
        out[f"{name}.x0"] = torch.stack(x0)
    out[f"{name}.timesteps"] = s.timesteps.to(torch.float64)
    out[f"{name}.init_noise_sigma"] = torch.tensor([float(s.init_noise_sigma)], dtype=torch.float64)
    out[f"{name}.x_t"] = x_t
    out[f"{name}.eps"] = eps
    out[f"{name}.inputs"] = torch.stack(inputs)
    out[f"{name}.trajectory"] = torch.stack(traj)
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])
