"""Per-stage times of one encode (kodim01, q4) in a warm process: analysis, the exact synthesis,
the refinement (both), and quantization with the exact entropy parameters. Medians of 4 after one
warm-up. Usage: encode_stages.py [model] (default anfic-ckbd-n64-m256-int8)."""
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from anfcodec import zoo

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
torch.set_grad_enabled(False)
model = zoo.load_model(sys.argv[1] if len(sys.argv) > 1 else "anfic-ckbd-n64-m256-int8").requires_grad_(False)
image = np.array(Image.open("../shared/data/kodak/kodim01.png"))
x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
quality = 4.0
steps = model.default_refine(quality)


def timed(f, n=4):
    result = f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - t)
    return result, statistics.median(times)


z2, t_analyze = timed(lambda: model.analyze(x))
gain = model.gain(torch.tensor([quality]))
_, t_synth = timed(lambda: model.synthesize_exact((z2 * gain).double(), quality))
refined, t_refine = timed(lambda: model.refine(x, z2, quality, steps))
_, t_quantize = timed(lambda: model.quantize(refined, quality))
print(f"{torch.backends.cpu.get_cpu_capability()}, refinement steps {steps:.2f}: analysis {t_analyze:.3f} s, "
      f"exact synthesis {t_synth:.3f} s, refinement {t_refine:.3f} s, quantization {t_quantize:.3f} s")
