"""The exact synthesis against the float32 one of the same model, interleaved in one warm process
(kodim01's latent at q4): medians of N pairs and the median of the per-pair ratios, which this
noisy machine class holds steadier than either time. To compare two commits, run it alternately
from each tree (PYTHONPATH set to it), as bench/ab_api.py. Env: M (model, default the int8 one),
T (threads, 2), N (pairs, 9). The md5 of the exact output must not change between commits."""
import hashlib
import os
import statistics
import time

import numpy as np
import torch
from PIL import Image

from anfcodec import zoo

torch.set_num_threads(int(os.environ.get("T", "2")))
torch.set_grad_enabled(False)
model = zoo.load_model(os.environ.get("M", "anfic-ckbd-n64-m256-int8")).requires_grad_(False)
image = np.array(Image.open("../shared/data/kodak/kodim01.png"))
x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
q = 4.0
yh = torch.round(model.analyze(x) * model.gain(torch.tensor([q]))).double()
out = model.synthesize_exact(yh, q)  # warm-up: the backend choices, the fixed-point copies
model.synthesize_exact(yh, q)
model.synthesize_float(yh.float(), q)
exact, fast, ratios = [], [], []
for _ in range(int(os.environ.get("N", "9"))):
    t = time.perf_counter()
    model.synthesize_exact(yh, q)
    a = time.perf_counter() - t
    t = time.perf_counter()
    model.synthesize_float(yh.float(), q)
    b = time.perf_counter() - t
    exact.append(a)
    fast.append(b)
    ratios.append(a / b)
m = statistics.median
digest = hashlib.md5(out.numpy().tobytes()).hexdigest()[:8]
print(f"exact {m(exact):.3f} s (min {min(exact):.3f}) float32 {m(fast):.3f} s (min {min(fast):.3f}) "
      f"pair ratio {m(ratios):.2f} md5 {digest}")
