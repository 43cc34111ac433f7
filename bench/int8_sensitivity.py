"""What int8 arithmetic in the synthesis would cost in PSNR: a planning measurement, not a codec path.

The bit-exact decoder computes on fine fixed-point grids (activations 2^-14, weights 2^-16) split
into int8 digits: 2-5 int8 products per convolution. A decoder whose weights, and most activations,
are plain int8 would need one. This script measures what that precision costs before anyone
builds it. It fake-quantizes the float decoder of a model: weights per output channel to int8,
the input of each convolution per tensor to B bits, with scales calibrated on crops of the
training photographs. It then reports the PSNR change on Kodak images, for each layer alone and
for mixed configurations.

    .venv/bin/python bench/int8_sensitivity.py --model anfic-ckbd-n64-m256 --qualities 2,5,8
"""
from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anfcodec import api, zoo

CONV = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def synthesis_convs(model) -> list[tuple[str, torch.nn.Module]]:
    """The convolutions the decoder runs: the inverse flow's nets and the post-filter."""
    nets = {"g_s2": model.g_s2, "g_a2": model.g_a2, "g_s1": model.g_s1, "post": model.post_filter}
    return [(f"{n}.{k}", mod) for n, net in nets.items() for k, mod in net.named_modules() if isinstance(mod, CONV)]


def symbols(model, img: Image.Image, q: float):
    x = api._tensor(np.asarray(img), (0, 0, img.width, img.height), model)
    with torch.inference_mode():
        return model.compress(x, q, model.default_refine(q))


def calibrate(model, convs, photos: list[Path], qualities) -> dict[str, float]:
    """max |input| of each convolution over 512x512 crops of ``photos`` at ``qualities``."""
    amax = collections.defaultdict(float)

    def hook(name):
        def h(mod, args):
            amax[name] = max(amax[name], args[0].detach().abs().amax().item())
        return h
    hooks = [mod.register_forward_pre_hook(hook(n)) for n, mod in convs]
    for p in photos:
        img = Image.open(p).convert("RGB").crop((0, 0, 512, 512))
        for q in qualities:
            with torch.inference_mode():
                model.decompress_float(symbols(model, img, q), q)
    for h in hooks:
        h.remove()
    return amax


class FakeQuant:
    """int8 weights per output channel everywhere; inputs of the convolutions named in ``bits`` quantized."""

    def __init__(self, convs, amax: dict, bits: dict[str, int]):
        self.convs, self.saved, self.hooks = convs, {n: mod.weight.data for n, mod in convs}, []
        for n, mod in convs:
            w = self.saved[n]
            out_dim = 1 if isinstance(mod, torch.nn.ConvTranspose2d) else 0
            red = tuple(d for d in range(4) if d != out_dim)
            s = w.abs().amax(dim=red, keepdim=True).clamp_min(1e-12) / 127
            mod.weight.data = torch.round(w / s) * s
            if bits.get(n):
                lim = 2 ** (bits[n] - 1) - 1
                step = amax[n] / lim

                def h(mod, args, step=step, lim=lim):
                    return (torch.round(args[0] / step).clamp(-lim, lim) * step,)
                self.hooks.append(mod.register_forward_pre_hook(h))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        for n, mod in self.convs:
            mod.weight.data = self.saved[n]


def mean_psnr(model, cases) -> dict[float, float]:
    res = collections.defaultdict(list)
    for img, q, sym in cases:
        with torch.inference_mode():
            rec = api._to_rgb8(model.decompress_float(sym, q), img.width, img.height).astype(float)
        res[q].append(10 * math.log10(255**2 / ((np.asarray(img).astype(float) - rec) ** 2).mean()))
    return {q: float(np.mean(v)) for q, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="anfic-ckbd-n64-m256")
    ap.add_argument("--qualities", default="2,5,8")
    ap.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    ap.add_argument("--train", type=Path, default=Path("../shared/data/train"))
    ap.add_argument("--images", default="1,4,7,13,19,23", help="Kodak image numbers")
    args = ap.parse_args()
    torch.set_num_threads(2)
    qs = [float(q) for q in args.qualities.split(",")]
    model = zoo.load_model(args.model)
    convs = synthesis_convs(model)
    amax = calibrate(model, convs, sorted(args.train.glob("*.png"))[:3], qs)
    cases = [(img, q, symbols(model, img, q)) for k in args.images.split(",")
             for img in [Image.open(args.kodak / f"kodim{int(k):02d}.png").convert("RGB")] for q in qs]
    base = mean_psnr(model, cases)
    first = {next(n for n, _ in convs if n.startswith(net)) for net in ("g_s2", "g_a2", "g_s1.linear", "g_s1.branch", "post")}

    def row(label, bits):
        with FakeQuant(convs, amax, bits):
            r = mean_psnr(model, cases)
        print(f"| {label} | " + " | ".join(f"{r[q] - base[q]:+.3f}" for q in qs) + " |", flush=True)

    print(f"{args.model}, Kodak {args.images}, float decoder: " + ", ".join(f"q{q:g} {base[q]:.2f} dB" for q in qs))
    print("\n| int8 weights (per output channel), plus inputs quantized | " + " | ".join(f"ΔdB q{q:g}" for q in qs) + " |")
    print("|---|" + "---|" * len(qs))
    row("weights only", {})
    for n, mod in convs:
        row(f"{n} {tuple(mod.weight.shape)} input 8-bit", {n: 8})
    row("all inputs 8-bit", {n: 8 for n, _ in convs})
    wide = first | {"g_s1.branch.6"}
    row("network inputs and g_s1's last layer 16-bit, the rest 8-bit", {n: 16 if n in wide else 8 for n, _ in convs})
    row("all inputs 10-bit, network inputs 16-bit", {n: 16 if n in first else 10 for n, _ in convs})


if __name__ == "__main__":
    main()
