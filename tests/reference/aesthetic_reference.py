"""Reference for negimg's aesthetic tests: the LAION improved aesthetic predictor's head
(christophschuhmann/improved-aesthetic-predictor, simple_inference.py: nn.Sequential of
Linear(768, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64),
Dropout(0.1), Linear(64, 16), Linear(16, 1), no activations) with random weights, saved with
torch.save(state_dict) as the release's .pth is, and its scores in torch at test time.

usage: aesthetic_reference.py OUT_DIR
writes OUT_DIR/head_a.pth, head_b.pth (two random heads), bad_shape.pth (layers.2.weight
[128, 1000]), missing.pth (no layers.7.bias), and OUT_DIR/reference.json:
{"embeddings": [[768 floats], ...]  raw (not normalised) image embeddings
 "head_a": [score, ...], "head_b": [score, ...]}  the release's arithmetic: the embedding
                                                  L2-normalised in numpy, then the MLP in eval
                                                  mode in float32
"""
import json
import os
import sys

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, input_size):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.layers(x)


def normalized(a, axis=-1, order=2):
    l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
    l2[l2 == 0] = 1
    return a / np.expand_dims(l2, axis)


def head(seed):
    torch.manual_seed(seed)
    model = MLP(768).eval()
    # Larger weights than nn.Linear's init, so that the scores are far from zero.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(6, 768)) * rng.uniform(0.5, 20.0, size=(6, 1))
    result = {"embeddings": embeddings.tolist()}
    x = torch.from_numpy(normalized(embeddings)).float()
    for name, seed in [("head_a", 1), ("head_b", 2)]:
        model = head(seed)
        torch.save(model.state_dict(), os.path.join(out, f"{name}.pth"))
        with torch.no_grad():
            result[name] = model(x)[:, 0].double().tolist()
    sd = head(3).state_dict()
    bad = dict(sd)
    bad["layers.2.weight"] = torch.zeros(128, 1000)
    torch.save(bad, os.path.join(out, "bad_shape.pth"))
    missing = {k: v for k, v in sd.items() if k != "layers.7.bias"}
    torch.save(missing, os.path.join(out, "missing.pth"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
