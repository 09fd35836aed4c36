"""Reference for the change maps (tests/change_maps.rs): the luma change map, its entropy
and the region shares, computed with numpy from the PNG files (decoded by torchvision), and
the .npy files negimg wrote read back with np.load.

Usage: change_map_ref.py CASES.json OUT.json
CASES: [{"image": png, "baseline": png, "npy": negimg's map, "mask": png or null}]
"""
import json
import sys

import numpy as np
from torchvision.io import ImageReadMode, read_image


def rgb(path):
    return read_image(path, ImageReadMode.RGB).permute(1, 2, 0).numpy().astype(np.float64)


def luma(img):
    return 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]


def nearest(mask, h, w):
    """Pixel x of w takes source pixel floor((x + 0.5) * W_src / w)."""
    sh, sw = mask.shape
    ys = np.minimum(np.floor((np.arange(h) + 0.5) * sh / h).astype(int), sh - 1)
    xs = np.minimum(np.floor((np.arange(w) + 0.5) * sw / w).astype(int), sw - 1)
    return mask[ys][:, xs]


def main():
    cases = json.load(open(sys.argv[1]))
    out = []
    for c in cases:
        m = np.abs(luma(rgb(c["image"])) - luma(rgb(c["baseline"]))) / 255.0
        ours = np.load(c["npy"])
        total = m.sum()
        entropy = None  # undefined without change (JSON has no NaN)
        inside = None
        if total > 0:
            p = m.ravel() / total
            p = p[p > 0]
            entropy = float(-(p * np.log(p)).sum() / np.log(m.size))
            if c["mask"] is not None:
                mask = rgb(c["mask"])
                assert set(np.unique(mask)) <= {0.0, 255.0}
                region = nearest(mask[..., 0] == 255.0, *m.shape)
                inside = float(m[region].sum() / total)
        out.append({
            "shape": list(ours.shape),
            "dtype": str(ours.dtype),
            "max_diff": float(np.abs(ours.astype(np.float64) - m).max()),
            "max": float(m.max()),
            "entropy": entropy,
            "in_region": inside,
        })
    json.dump(out, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()
