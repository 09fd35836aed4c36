"""Reference statistics for negimg's subject-level pooling and removal tests (numpy/scipy).

usage: subject_stats_reference.py IN.json OUT.json
IN: {"shared": [{"groups": [[d, ...], ...], "seed": u64}, ...],   two-stage bootstrap on
        negimg's SplitMix64 stream (the same draws: exact comparison)
     "pooled": [{"groups": [[d, ...], ...]}, ...],                  subject-level pooling
     "resamples": B, "confidence": 0.95,
     "mcnemar": [[b, c], ...]}
OUT: {"shared": [[lo, hi], ...],
      "pooled": [{"mean", "p", "lo", "hi", "subject_p": [...]}, ...],
         mean: mean of the subject means; p: scipy.stats.permutation_test sign flips of the
         subject means (exact); lo, hi: two-stage percentile bootstrap with numpy's own
         generator and 200000 resamples (compared statistically); subject_p: each subject's
         exact sign-flip p over its seeds (scipy),
      "mcnemar": [p, ...]}  scipy.stats.binomtest(b, b + c, 0.5) two-sided (1 when b + c = 0).
"""
import json
import sys

import numpy as np
from scipy import stats

# The script's folder is on sys.path: the exact sign-flip test is written once.
from stats_reference import sign_flip

MASK = (1 << 64) - 1


class SplitMix64:
    """negimg's generator (src/scoring/stats.rs), for the shared-stream comparison."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def two_stage_shared(groups, seed, resamples, confidence):
    rng = SplitMix64(seed)
    s = len(groups)
    out = []
    for _ in range(resamples):
        total = 0.0
        for _ in range(s):
            g = groups[rng.below(s)]
            n = len(g)
            acc = 0.0
            for _ in range(n):
                acc += g[rng.below(n)]
            total += acc / n
        out.append(total / s)
    alpha = (1 - confidence) / 2
    q = np.quantile(np.sort(np.asarray(out)), [alpha, 1 - alpha])
    return [float(q[0]), float(q[1])]


def two_stage_numpy(groups, confidence, resamples=200000):
    rng = np.random.default_rng(0)
    s = len(groups)
    picks = rng.integers(0, s, size=(resamples, s))
    means = np.zeros(resamples)
    for j in range(s):
        # For each draw position j, the drawn subject's seeds resampled with replacement.
        col = np.zeros(resamples)
        for g_index, g in enumerate(groups):
            rows = np.nonzero(picks[:, j] == g_index)[0]
            if rows.size == 0:
                continue
            g = np.asarray(g)
            draws = rng.integers(0, len(g), size=(rows.size, len(g)))
            col[rows] = g[draws].mean(axis=1)
        means += col
    means /= s
    alpha = (1 - confidence) / 2
    q = np.quantile(means, [alpha, 1 - alpha])
    return float(q[0]), float(q[1])


def mcnemar(b, c):
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


data = json.load(open(sys.argv[1]))
B = data["resamples"]
conf = data["confidence"]
out = {
    "shared": [two_stage_shared(c["groups"], c["seed"], B, conf) for c in data["shared"]],
    "pooled": [],
    "mcnemar": [mcnemar(b, c) for b, c in data["mcnemar"]],
}
for case in data["pooled"]:
    groups = case["groups"]
    means = [float(np.mean(g)) for g in groups]
    lo, hi = two_stage_numpy(groups, conf)
    out["pooled"].append(
        {
            "mean": float(np.mean(means)),
            "p": sign_flip(means),
            "lo": lo,
            "hi": hi,
            "subject_p": [sign_flip(g) for g in groups],
        }
    )
json.dump(out, open(sys.argv[2], "w"))
print("ok")
