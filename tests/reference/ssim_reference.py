"""Reference SSIM for negimg's pixel measure: scikit-image's structural_similarity on the luma.

usage: ssim_reference.py OUT.json A.png B.png [A.png B.png ...]
Writes a JSON list, one SSIM per pair: Wang et al. with an 11x11 Gaussian window (sigma 1.5,
gaussian_weights=True, use_sample_covariance=False), data_range 255, on the float luma
0.299 R + 0.587 G + 0.114 B.
"""
import json
import sys

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity


def luma(path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


out = []
paths = sys.argv[2:]
for a, b in zip(paths[0::2], paths[1::2]):
    out.append(float(structural_similarity(luma(a), luma(b), gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=255.0)))
json.dump(out, open(sys.argv[1], "w"))
print("ok")
