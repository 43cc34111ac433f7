"""Re-encoding generations of the int8 models: the encoder's refinement aimed at the float flow
(``float``: as shipped until session 12) against ``ANFIC.refine`` as it is (``current``: aimed at
the int8 decoder for int8 models, at the float flow for the others).

Each generation encodes the previous generation's decoded 8-bit image at the same quality; PSNR is
against the original. Prints one line per image and quality: first-generation bpp, the PSNR of
each generation, and the loss from the first to the last. Results: docs/RESULTS.md, session 12.

    .venv/bin/python bench/int8_generations.py anfic-ckbd-n64-m256-int8 float 6,8 kodim01,kodim04
    .venv/bin/python bench/int8_generations.py anfic-ckbd-n64-m256-int8 current 6,8 kodim01,kodim04
"""
import contextlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from anfcodec.benchmarks import generations as gen
from anfcodec import zoo

GENERATIONS = 6


def main(model_id: str, aim: str, qualities: str, images: str, kodak: Path = Path("../shared/data/kodak")) -> None:
    model = zoo.load_model(model_id, "cpu")  # the cached instance that api.encode uses
    if aim not in ("float", "current"):
        raise SystemExit("aim: float or current")
    with model.refining_against_float() if aim == "float" else contextlib.nullcontext():
        chains(model_id, aim, qualities, images, kodak)


def chains(model_id: str, aim: str, qualities: str, images: str, kodak: Path) -> None:
    for name in images.split(","):
        rgb = np.asarray(Image.open(kodak / f"{name}.png").convert("RGB"))
        for q in (float(v) for v in qualities.split(",")):
            curve = gen.anf_chain(rgb, q, GENERATIONS, model_id)
            psnrs = [round(p, 3) for _, p in curve]
            print(model_id, aim, name, q, "bpp", round(curve[0][0], 4), "psnr", psnrs,
                  "loss", round(psnrs[0] - psnrs[-1], 3), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
