"""Clipped activation scales for the int8 synthesis: a measurement, not a codec path.

The shipped scales are max |input| of each 8-bit convolution input over the calibration crops.
This script tries clipped scales (per layer, the clip with the least mean squared rounding error
on sampled inputs; the 99.99th and 99.999th percentiles), decodes six Kodak images with the real
int8 decoder for each, and prints mean PSNR at q2, q5 and q8. Result (docs/RESULTS.md, session 12):
every clip loses, up to 0.2 dB at q8.

    .venv/bin/python bench/int8_clipping.py [MODEL_ID]
"""
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anfcodec import api, int8net, zoo
from anfcodec.training.export import calibration_images

mid = sys.argv[1] if len(sys.argv) > 1 else "anfic-ckbd-n64-m256-int8"
model = zoo.load_model(mid, "cpu")
shipped = model.int8_scales.clone()
layers = list(int8net._scaled(model))
samples = {idx: [] for *_, idx in layers}
gen = torch.Generator().manual_seed(0)
hooks = []
for name, modules, i, idx in layers:
    def hook(mod, args, idx=idx):
        a = args[0].detach().abs().flatten().float()
        pick = torch.randint(0, a.numel(), (min(a.numel(), 300_000),), generator=gen)
        samples[idx].append(a[pick])
    hooks.append(modules[i].register_forward_pre_hook(hook))
with torch.no_grad():
    for x in calibration_images(Path("../shared/data/train")):
        for q in (2, 5, 8):
            model.decompress_float(model.compress(x, q, model.default_refine(q)), q)
for h in hooks:
    h.remove()
samples = {k: torch.cat(v) for k, v in samples.items()}


def narrow(name, modules, i):
    return isinstance(modules[i], int8net._CONV) and i not in int8net.wide_inputs(name, modules)


def mse_clip(a, amax, limit=127):
    best = None
    for f in np.linspace(0.3, 1.0, 36):
        s = amax * f / limit
        err = ((a - (a / s).round().clamp(max=limit) * s) ** 2).mean().item()
        if best is None or err < best[0]:
            best = (err, f)
    return best[1]

policies = {"max (shipped)": shipped.clone()}
mse = shipped.clone()
fr = {}
for name, modules, i, idx in layers:
    if narrow(name, modules, i):
        f = mse_clip(samples[idx], float(shipped[idx]))
        fr[f"{name}.{i}"] = round(f, 2)
        mse[idx] = shipped[idx] * f
print("mse clip fractions", fr)
policies["mse clip"] = mse
for p in (99.99, 99.999):
    v = shipped.clone()
    for name, modules, i, idx in layers:
        if narrow(name, modules, i):
            v[idx] = min(float(shipped[idx]), float(np.percentile(samples[idx].numpy(), p)))
    policies[f"p{p}"] = v

kodak = [Path(f"../shared/data/kodak/kodim{n:02d}.png") for n in (1, 4, 7, 13, 19, 23)]
syms = {}
for f in kodak:
    img = Image.open(f).convert("RGB")
    x = api._tensor(np.asarray(img), (0, 0, img.width, img.height), model)
    for q in (2, 5, 8):
        with torch.inference_mode():
            syms[(f, q)] = (model.compress(x, q, model.default_refine(q)), np.asarray(img).astype(np.float64))
for label, v in policies.items():
    model.int8_scales.copy_(v)
    model._exact_synthesis = None  # rebuilt from the new scales
    out = {}
    for (f, q), (s, ref) in syms.items():
        with torch.inference_mode():
            y = model.decompress(s, q)
        rec = (y[0, :, :ref.shape[0], :ref.shape[1]] * 255).round().clamp(0, 255).permute(1, 2, 0).numpy()
        out.setdefault(q, []).append(10 * math.log10(255**2 / ((rec - ref) ** 2).mean()))
    print(label, {q: round(float(np.mean(v)), 3) for q, v in out.items()}, flush=True)
