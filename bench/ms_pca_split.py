"""Is a data-driven linear split a better start for MS-ANFIC's coarse scale than the DCT-order one?

Fits the 2x2 projection y [M, 2, 2] -> y_c [M_c] as the top M_c principal directions of the gained
latent's 2x2 blocks over training crops (at quality Q, default 4), then, per quality, compares on a
Kodak image the float decode of ``linear_up(linear_down(y))`` for the checkpoint's projection and for
the PCA one (unquantized, PSNR against the image), beside fine coding (round(y)).
Usage: ms_pca_split.py CHECKPOINT [IMAGE] [--save OUT.pt]  (--save writes the PCA weight [M_c, M, 2, 2])"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anfcodec.models import build_model

torch.set_num_threads(1)
torch.set_grad_enabled(False)
args = [a for a in sys.argv[1:] if not a.startswith("--")]
save = sys.argv[sys.argv.index("--save") + 1] if "--save" in sys.argv else None
if save:
    args.remove(save)
state = torch.load(args[0], weights_only=False, map_location="cpu")
model = build_model(state["config"])
model.load_state_dict(state["model"])
model.update_tables()
model.eval()
mc = model.split_down.linear.weight.shape[0]


def load(path: Path, size: int | None = None) -> torch.Tensor:
    a = np.array(Image.open(path).convert("RGB"))
    if size:
        h, w = a.shape[:2]
        a = a[(h - size) // 2:(h - size) // 2 + size, (w - size) // 2:(w - size) // 2 + size]
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


fit_q = torch.tensor([4.0])
blocks = []
for p in sorted(Path("../shared/data/train").glob("*"))[:24]:
    y = model.analyze(load(p, 512)) * model.gain(fit_q)
    blocks.append(F.unfold(y, 2, stride=2)[0].T)  # [positions, M * 4] in (channel, dy, dx) order
b = torch.cat(blocks).double()
cov = b.T @ b / b.shape[0]  # about zero: no mean is removed, so the projection stays linear
evals, evecs = torch.linalg.eigh(cov)
top = evecs[:, -mc:].flip(1).T.float()  # [mc, M * 4], largest first
print(f"PCA on {b.shape[0]} blocks: top {mc} of {b.shape[1]} directions hold "
      f"{float(evals[-mc:].sum() / evals.sum()):.1%} of the energy")
pca = top.reshape(mc, -1, 2, 2)
if save:
    torch.save(pca, save)
x = load(Path(args[1] if len(args) > 1 else "../shared/data/kodak/kodim01.png"))


def psnr(rec: torch.Tensor) -> float:
    return float(-10 * torch.log10(((rec.clamp(0, 1) - x) ** 2).mean()))


old = model.split_down.linear.weight
for quality in (1.0, 4.0, 8.0):
    q = torch.tensor([quality])
    gain = model.gain(q)
    y = model.analyze(x) * gain
    row = [f"q{quality:g}: fine round(y) {psnr(model._decode_float(torch.round(y), gain, q)):.2f} dB"]
    for name, w in (("checkpoint projection", old), ("PCA projection", pca)):
        y_c = F.conv2d(y, w, stride=2)
        back = F.conv_transpose2d(y_c, w, stride=2)
        kept = float((back * y).sum() / (y * y).sum())
        row.append(f"{name} {psnr(model._decode_float(back, gain, q)):.2f} dB ({kept:.1%} of y's energy), "
                   f"rounded y_c {psnr(model._decode_float(F.conv_transpose2d(torch.round(y_c), w, stride=2), gain, q)):.2f} dB")
    print("; ".join(row))
