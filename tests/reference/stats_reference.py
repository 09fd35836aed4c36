"""Reference statistics for negimg's stats tests, computed with scipy at test time.

usage: stats_reference.py IN.json OUT.json
IN: {"samples": [[...], ...], "holm": [[p, ...], ...], "bootstrap": [[...], ...]}
OUT: {"sign_flip": [p, ...]            two-sided sign-flip permutation p-value of the mean,
                                        scipy.stats.permutation_test(permutation_type="samples"),
                                        exact (all 2^n sign vectors),
      "holm": [[p_adj, ...], ...]       Holm's step-down adjustment (statsmodels' multipletests
                                        "holm" is not in the venv; written out here),
      "bootstrap": [[lo, hi], ...]}     scipy.stats.bootstrap percentile 95% interval of the mean
                                        with 200000 resamples.
"""
import json
import sys

import numpy as np
from scipy import stats

def sign_flip(x):
    x = np.asarray(x, dtype=np.float64)
    # One-sample paired design: permuting the pairing of (x, 0) flips the signs.
    res = stats.permutation_test(
        (x, np.zeros_like(x)),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf,
        vectorized=True,
    )
    return float(res.pvalue)


def holm(p):
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p[i] * (m - rank)))
        adj[i] = running
    return adj.tolist()


def bootstrap(x):
    res = stats.bootstrap(
        (np.asarray(x, dtype=np.float64),),
        np.mean,
        confidence_level=0.95,
        n_resamples=200000,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def main():
    data = json.load(open(sys.argv[1]))
    out = {
        "sign_flip": [sign_flip(x) for x in data["samples"]],
        "holm": [holm(p) for p in data["holm"]],
        "bootstrap": [bootstrap(x) for x in data["bootstrap"]],
    }
    json.dump(out, open(sys.argv[2], "w"))
    print("ok")


if __name__ == "__main__":
    main()
