"""Interleaved A/B of the Winograd form: decode (and encode) with it offered and with it withheld,
same process, same file; the pixels must be identical. Usage: ab_winograd.py [model] [rounds]."""
import statistics
import sys
import time

import numpy as np
import torch

from anfcodec import api, arith, lowering

model = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "-" else None
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.set_num_threads(2)
offered = lowering.Product.winograd_exact
arms = {"winograd": offered, "without": lambda self, max_abs: False}
img = "../shared/data/kodak/kodim01.png"
times = {arm: {"encode": [], "decode": []} for arm in arms}
files, pixels = {}, {}
for r in range(rounds + 1):  # round 0 warms up (and makes the measured choices)
    for arm, fn in arms.items():
        lowering.Product.winograd_exact = fn
        t = time.perf_counter(); data = api.encode(img, 4, model_id=model); te = time.perf_counter() - t
        t = time.perf_counter(); out = api.decode(data); td = time.perf_counter() - t
        files.setdefault(arm, data); pixels.setdefault(arm, np.asarray(out))
        if r:
            times[arm]["encode"].append(te); times[arm]["decode"].append(td)
assert files["winograd"] == files["without"], "the files differ"
assert np.array_equal(pixels["winograd"], pixels["without"]), "the pixels differ"
for arm in arms:
    print(arm, {k: round(statistics.median(v), 3) for k, v in times[arm].items()},
          {k: [round(x, 2) for x in v] for k, v in times[arm].items()})
print("same file, same pixels;", torch.backends.cpu.get_cpu_capability())
print({k: v for k, v in arith.chosen().items() if "winograd" in k})
