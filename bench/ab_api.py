"""Warm in-process API times of one model (kodim01, q4): encode, bit-exact decode and ``--fast``
decode, medians of 5 after a warm-up, and their ratio. To compare two commits, run it alternately
from each tree with PYTHONPATH set to that tree (session 20 did so against a worktree of the older
commit). Usage: ab_api.py [model] (default anfic-ckbd-n64-m256-int8)."""
import statistics
import sys
import time

import numpy as np
from PIL import Image

from anfcodec import api

model = sys.argv[1] if len(sys.argv) > 1 else "anfic-ckbd-n64-m256-int8"
image = np.array(Image.open("../shared/data/kodak/kodim01.png"))
data = api.encode(image, quality=4, model_id=model)
api.decode(data)
api.decode(data, fast=True)
runs = {"encode": [], "decode": [], "fast": []}
for _ in range(5):
    for name, work in (("encode", lambda: api.encode(image, quality=4, model_id=model)),
                       ("decode", lambda: api.decode(data)), ("fast", lambda: api.decode(data, fast=True))):
        t = time.perf_counter()
        work()
        runs[name].append(time.perf_counter() - t)
med = {k: statistics.median(v) for k, v in runs.items()}
print(model, " ".join(f"{k} {v:.3f} s" for k, v in med.items()), f"ratio {med['decode'] / med['fast']:.2f}")
