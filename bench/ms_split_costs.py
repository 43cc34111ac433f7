"""How close an MS-ANFIC checkpoint's coarse scale is to being chosen: per quality, on one Kodak
image, the share of regions whose coarse cost (``region_costs``) beats the fine one, the median
coarse/fine cost ratio, and the coarse scale's bits against the fine scale's.
Usage: ms_split_costs.py CHECKPOINT [IMAGE]"""
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
image = np.array(Image.open(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/kodak/kodim01.png"))
x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
print(f"step {state['counters']['step']}")
for quality in (1.0, 2.0, 4.0, 6.0, 8.0):
    q = torch.tensor([quality])
    gain, lmbda = model.gain(q), model.lmbda(q)
    y = model.analyze(x) * gain
    cost_f, cost_c = model.region_costs(x, y, model.split_down(y), gain, lmbda, q)
    ratio = (cost_c / cost_f).flatten()
    print(f"q{quality:g}: coarse cheaper in {float((cost_c < cost_f).float().mean()):.1%} of regions, "
          f"coarse/fine cost median {float(ratio.median()):.2f} (min {float(ratio.min()):.2f}), "
          f"total fine {float(cost_f.sum()):.0f} / coarse {float(cost_c.sum()):.0f}")
