"""PNG writing time and size per zlib level, on Kodak originals and on decoded images.

Backs the ``anfcodec decode --png-compress`` help text and docs/RESULTS.md (session 12): PNG
writing is a fifth of a fast model's Kodak-size decode.

    .venv/bin/python bench/png_levels.py [KODAK_DIR]
"""
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from anfcodec import api

LEVELS = (1, 2, 3, 6)
DECODED = ("kodim01.png", "kodim07.png", "kodim13.png", "kodim19.png", "kodim23.png")


def main(kodak: Path) -> None:
    res: dict[tuple[str, int], list] = {}
    for f in sorted(kodak.glob("*.png")):
        im = Image.open(f).convert("RGB")
        imgs = [("original", im)]
        if f.name in DECODED:
            imgs += [(f"decoded q{q}", api.decode(api.encode(np.asarray(im), quality=q,
                                                             model_id="anfic-ckbd-n64-m256-int8")))
                     for q in (2, 5)]
        for kind, img in imgs:
            for level in LEVELS:
                t = time.perf_counter()
                buf = io.BytesIO()
                img.save(buf, "PNG", compress_level=level)
                r = res.setdefault((kind, level), [0, 0.0, 0])
                r[0] += len(buf.getvalue())
                r[1] += time.perf_counter() - t
                r[2] += 1
    for (kind, level), (size, seconds, n) in sorted(res.items()):
        print(f"{kind:12s} level {level}: size {size / res[(kind, 6)][0] - 1:+.2%} vs level 6, "
              f"{seconds / n * 1000:.0f} ms/image ({n} images)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/kodak"))
