"""Which distortion should MS-ANFIC's split decision use? For one quality and some images, the
per-region map (``region_costs``) judged against each of two targets: the float decoder's image of
the unquantized latent (``choose_split``'s stand-in until session 24) and the input image. For each
map, the whole-image cost bits + lambda * 255^2 / 3 * SSE of all-fine and of the map, with the SSE of
the float decode against that target (what the whole-image test sees) and of the exact decode,
rounded to 8 bits, against the input (what the file is judged by).
Usage: ms_split_decision.py CHECKPOINT QUALITY IMAGE..."""
import sys

import numpy as np
import torch
from PIL import Image

from anfcodec.models import build_model

torch.set_num_threads(2)
torch.set_grad_enabled(False)
state = torch.load(sys.argv[1], weights_only=False, map_location="cpu")
model = build_model(state["config"])
model.load_state_dict(state["model"])
model.update_tables()
model.eval()
quality = float(sys.argv[2])
q = torch.tensor([quality])
gain, lmbda = model.gain(q), model.lmbda(q)
w = float(lmbda) * 255.0**2 / 3
print(f"step {state['counters']['step']}, q{quality:g}, lambda*255^2/3 = {w:.0f}")
for path in sys.argv[3:]:
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    z2 = model.analyze(x)
    steps = model.default_refine(quality)
    y = (model.refine(x, z2, quality, steps) if steps else z2) * gain
    y_c = model.split_down(y)
    latent_image = model._decode_float(y, gain, q).clamp(0, 1)

    def cost(split: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float]:
        sym = model._symbols(y, y_c, split)
        bits = sum(float((-torch.log2(v)).sum()) for v in model.likelihoods(sym).values())
        bits += 0 if sym.split.all() else sym.split.numel()
        y_hat = model.dequantize(sym)
        rec = model._decode_float(y_hat.float(), gain, q).clamp(0, 1)
        exact = torch.round(model.synthesize_exact(y_hat, quality).float() * 255) / 255
        return bits, float(((rec - target) ** 2).sum()), float(((exact - x) ** 2).sum())

    for name, target in (("latent's decode", latent_image), ("input image", x)):
        cost_f, cost_c = model.region_costs(target, y, y_c, gain, lmbda, q)
        split = (cost_f <= cost_c).float()
        if split.all():
            print(f"{path} against the {name}: all regions fine")
            continue
        (bf, sf, tf), (bs, ss, ts) = cost(torch.ones_like(split), target), cost(split, target)
        print(f"{path} against the {name}: fine share {float(split.mean()):.3f}, map - all-fine: "
              f"{bs - bf:+.0f} bits, decision's estimate {bs - bf + w * (ss - sf):+.0f}, "
              f"file's {bs - bf + w * (ts - tf):+.0f} ({10 * np.log10(tf / ts):+.2f} dB)")
