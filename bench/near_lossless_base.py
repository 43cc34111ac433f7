"""Which lossy base layer the near-lossless mode should use: bpp at each max error for base qualities.

    ANFCODEC_WEIGHTS=... python bench/near_lossless_base.py 8,10 ../shared/data/kodak/kodim0[1-3].png

For each base quality and max error N (4..0), the mean bpp over the images of
``encode(quality=base, max_error=N)``; every decoded sample is checked to be within N.
"""
from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from anfcodec import api

MAX_ERRORS = [4, 3, 2, 1, 0]


def main(bases: list[float], paths: list[str]) -> None:
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    print("| base quality | " + " | ".join(f"max error {e}" for e in MAX_ERRORS) + " |")
    print("|---|" + "---|" * len(MAX_ERRORS))
    for base in bases:
        cells = []
        for e in MAX_ERRORS:
            bpp = []
            for rgb in images:
                data = api.encode(rgb, quality=base, max_error=e)
                err = np.abs(np.asarray(api.decode(data)).astype(int) - rgb).max()
                assert err <= e, (base, e, err)
                bpp.append(8 * len(data) / (rgb.shape[0] * rgb.shape[1]))
            cells.append(f"{np.mean(bpp):.3f}")
        print(f"| {base:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main([float(q) for q in sys.argv[1].split(",")], sys.argv[2:])
