"""Prototype, kept as the record of a measurement: an int8 fixed-point synthesis on the existing machinery.

Every convolution of the fast model's decoder quantizes its input per tensor (16 bits for the
networks' inputs and g_s1's last layer, 8 bits elsewhere; scales from 512x512 crops of three
training photographs) and multiplies int8 weights (per-output-channel scales): one or two int8
products instead of 2-5 digit products. Between layers the activations stay on the float64
2^-14 grid, as in ``anfcodec.exact``. Prints PSNR (float, exact and this decoder) on six Kodak
images and the time of ``decompress`` on kodim01 at q4. It changes no file format; no decoder uses it.

    .venv/bin/python bench/int8_synthesis_prototype.py
"""
import collections
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anfcodec import api, exact, zoo
from anfcodec.exact import ExactSequential, Kernel, strip_conv, subpixel_kernel

torch.set_num_threads(2)
A = exact.SYNTH_ACT_BITS

class Int8Sequential(ExactSequential):
    """Like ExactSequential (grid 2^-A float64 between layers), but every convolution quantizes its input to
    ``bits`` on a per-tensor scale and multiplies int8 weights (per-output-channel scales): one or two int8
    products per layer."""
    def __init__(self, seq, in_amax: dict, wide: set):
        super().__init__(seq, A, exact.SYNTH_WEIGHT_BITS)
        layers = []
        for idx, ((kind, kern, layer, fan, bias_max), mod) in enumerate(zip(self.layers, seq if isinstance(seq, torch.nn.Sequential) else [seq])):
            if kind in ("conv", "shuffle"):
                w = mod.weight.detach().double()
                transposed = isinstance(mod, torch.nn.ConvTranspose2d)
                out_dim = 1 if transposed else 0
                red = tuple(d for d in range(4) if d != out_dim)
                s_w = w.abs().amax(dim=red) / 127
                shape = [1, 1, 1, 1]; shape[out_dim] = -1
                q = torch.round(w / s_w.view(shape))
                bits = 16 if idx in wide else 8
                lim = 2 ** (bits - 1) - 1
                s_a = in_amax[idx] / lim
                to_grid = (s_a * s_w * 2.0 ** A).view(1, -1, 1, 1)  # per output channel, after any shuffle
                if kind == "shuffle":
                    qk, _, _ = subpixel_kernel(q, mod.stride[0], mod.padding[0])
                    s_w = s_w.repeat_interleave(mod.stride[0] ** 2)
                else:
                    qk = q
                acc_unit = s_a * s_w                       # real value of one accumulator unit, per channel
                b = mod.bias.detach().double() if mod.bias is not None else None
                if b is not None and kind == "shuffle":
                    b = b.repeat_interleave(mod.stride[0] ** 2)
                b_acc = None if b is None else torch.round(b / acc_unit)
                k = Kernel(qk, b_acc)
                layers.append((kind, k, layer, (2.0 ** -A / s_a, lim), to_grid))
            else:
                layers.append((kind, kern, layer, fan, bias_max))
        self.layers = layers

    def _layers(self, a):
        owned = False
        for kind, w, layer, fan, bias_max in self.layers:
            if kind in ("conv", "shuffle"):
                inv_s, lim = fan
                a_int = (a * inv_s).round_().clamp_(-lim, lim)   # requantize to this layer's input scale
                if kind == "conv":
                    a = strip_conv(a_int, w, None, layer.stride[0], (layer.padding[0], layer.padding[0]), max_abs=lim)
                else:
                    stride, before, after = layer
                    a = strip_conv(a_int, w, None, 1, (before, after), shuffle=stride, max_abs=lim)
                a = a.mul_(bias_max).round_()  # to the grid (per channel)
                owned = True
                continue
            sub = ExactSequential.__new__(ExactSequential)
            sub.__dict__.update(self.__dict__); sub.layers = [(kind, w, layer, fan, bias_max)]
            a = sub._layers(a)
        return a

m = zoo.load_model('anfic-ckbd-n64-m256')
seqs = {"g_s2": m.g_s2, "g_a2": m.g_a2, "g_s1_linear": m.g_s1.linear, "g_s1_branch": m.g_s1.branch, "post": m.post_filter.net}
amax = collections.defaultdict(lambda: collections.defaultdict(float))
hooks = []
for name, seq in seqs.items():
    mods = list(seq) if isinstance(seq, torch.nn.Sequential) else [seq]
    for i, mod in enumerate(mods):
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            def h(mod, args, name=name, i=i):
                amax[name][i] = max(amax[name][i], args[0].detach().abs().amax().item())
            hooks.append(mod.register_forward_pre_hook(h))
QS = (2, 5, 8)
def symbols_of(img, q):
    x = api._tensor(np.asarray(img), (0, 0, img.width, img.height), m)
    with torch.inference_mode():
        return m.compress(x, q, m.default_refine(q))
for p in sorted(Path('../shared/data/train').glob('*.png'))[:3]:
    img = Image.open(p).convert('RGB').crop((0, 0, 512, 512))
    for q in QS:
        s = symbols_of(img, q)
        with torch.inference_mode(): m.decompress_float(s, q)
for h in hooks: h.remove()
wide = {"g_s2": {0}, "g_a2": {0}, "g_s1_linear": {0}, "g_s1_branch": {0, 6}, "post": {0}}
int8nets = {k: Int8Sequential(seq, amax[k], wide[k]) for k, seq in seqs.items()}
exact_nets = m._exact_nets()
kodak = [Image.open(f'../shared/data/kodak/kodim{k:02d}.png').convert('RGB') for k in (1, 4, 7, 13, 19, 23)]
def psnr(img, rec):
    a = np.asarray(img).astype(float); b = api._to_rgb8(rec, img.width, img.height).astype(float)
    return 10 * math.log10(255 ** 2 / ((a - b) ** 2).mean())
res = collections.defaultdict(lambda: collections.defaultdict(list))
for img in kodak:
    for q in QS:
        s = symbols_of(img, q)
        with torch.inference_mode():
            res["float"][q].append(psnr(img, m.decompress_float(s, q)))
            m._exact_synthesis = exact_nets
            res["exact"][q].append(psnr(img, m.decompress(s, q)))
            m._exact_synthesis = int8nets
            res["int8"][q].append(psnr(img, m.decompress(s, q)))
for k in res: print(k, {q: round(np.mean(v), 3) for q, v in res[k].items()})
# timing on kodim01 q4
s = symbols_of(kodak[0], 4)
for label, nets in (("exact", exact_nets), ("int8", int8nets)) * 2:
    m._exact_synthesis = nets
    with torch.inference_mode():
        m.decompress(s, 4)
        ts = []
        for i in range(5):
            t = time.perf_counter(); m.decompress(s, 4); ts.append(time.perf_counter() - t)
    print(label, 'synthesis+hyper s', round(sorted(ts)[2], 3))
