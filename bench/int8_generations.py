"""Re-encoding generations of the int8 models: the encoder's refinement aimed at the float flow
(``float``: as shipped until session 12) against ``ANFIC.refine`` as it is (``current``: aimed at
the int8 decoder for int8 models, at the float flow for the others).

Each generation encodes the previous generation's decoded 8-bit image at the same quality; PSNR is
against the original. Prints one line per image and quality: first-generation bpp, the PSNR of
each generation, and the loss from the first to the last. Results: docs/RESULTS.md, session 12.

    .venv/bin/python bench/int8_generations.py anfic-ckbd-n64-m256-int8 float 6,8 kodim01,kodim04
    .venv/bin/python bench/int8_generations.py anfic-ckbd-n64-m256-int8 current 6,8 kodim01,kodim04
"""
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anfcodec import generations as gen
from anfcodec import zoo

GENERATIONS = 6


@torch.inference_mode()
def refine_against_float_flow(self, x, z2, quality, steps):
    """``ANFIC.refine`` as it was: each step decodes with the float flow at encoder precision."""
    q = torch.tensor([quality], dtype=torch.float32, device=z2.device)
    target = z2
    sizes = [1.0] * int(steps) + ([steps - int(steps)] if steps > int(steps) else [])
    for size in sizes:
        with self._encoder_precision():
            rec = (self._post(self.flow_inverse(z2), q) + 0.5).clamp(0, 1)
        z2 = z2 + size * (target - self.analyze(rec))
    return z2


def main(model_id: str, aim: str, qualities: str, images: str, kodak: Path = Path("../shared/data/kodak")) -> None:
    model = zoo.load_model(model_id, "cpu")  # the cached instance that api.encode uses
    if aim == "float":
        model.refine = types.MethodType(refine_against_float_flow, model)
    elif aim != "current":
        raise SystemExit("aim: float or current")
    for name in images.split(","):
        rgb = np.asarray(Image.open(kodak / f"{name}.png").convert("RGB"))
        for q in (float(v) for v in qualities.split(",")):
            curve = gen.anf_chain(rgb, q, GENERATIONS, model_id)
            psnrs = [round(p, 3) for _, p in curve]
            print(model_id, aim, name, q, "bpp", round(curve[0][0], 4), "psnr", psnrs,
                  "loss", round(psnrs[0] - psnrs[-1], 3), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
