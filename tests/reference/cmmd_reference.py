"""Reference CMMD for negimg's cmmd tests, with numpy at test time.

usage: cmmd_reference.py IN.json OUT.json
IN: {"cases": [{"x": [[...], ...], "y": [[...], ...]}, ...]}
OUT: {"cmmd": [d, ...],   google-research cmmd/distance.py's arithmetic (sigma 10, scale 1000,
                          the biased estimator, squared distances as |a|^2 + |b|^2 - 2 a.b), in
                          float64 numpy instead of JAX
      "p": [p, ...]}      the exact permutation p-value over every split of the pooled points
                          into sets of the two sizes (share with CMMD >= the observed)
"""
import itertools
import json
import sys

import numpy as np

SIGMA = 10
SCALE = 1000


def mmd(x, y):
    x_sq = np.diag(x @ x.T)
    y_sq = np.diag(y @ y.T)
    gamma = 1 / (2 * SIGMA**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return SCALE * (k_xx + k_yy - 2 * k_xy)


def exact_p(x, y):
    z = np.concatenate([x, y])
    observed = mmd(x, y)
    hits = total = 0
    for chosen in itertools.combinations(range(len(z)), len(x)):
        rest = [i for i in range(len(z)) if i not in chosen]
        total += 1
        if mmd(z[list(chosen)], z[rest]) >= observed * (1 - 1e-9):
            hits += 1
    return hits / total


data = json.load(open(sys.argv[1]))
out = {"cmmd": [], "p": []}
for case in data["cases"]:
    x = np.asarray(case["x"], dtype=np.float64)
    y = np.asarray(case["y"], dtype=np.float64)
    out["cmmd"].append(float(mmd(x, y)))
    out["p"].append(exact_p(x, y))
json.dump(out, open(sys.argv[2], "w"))
print("ok")
