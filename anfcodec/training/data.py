"""Training data: photographs preloaded as uint8, random crops, reproducible split.

The validation split is chosen by a hash of each file name, so it does not
depend on the folder's listing order or on which other files are present.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_TRAIN_DIR = Path(os.environ.get("ANFCODEC_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")) / "train"


def is_validation(name: str, fraction: float = 0.1) -> bool:
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> torch.Tensor:
    """uint8 [3, H, W]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def split(folder: Path) -> tuple[list[Path], list[Path]]:
    files = list_images(folder)
    val = [p for p in files if is_validation(p.name)]
    train = [p for p in files if not is_validation(p.name)]
    return train, val


class CropSampler:
    """Batches of random crops with flips and random down-scaling."""

    def __init__(self, images: list[torch.Tensor], crop: int, seed: int = 0, rescale_prob: float = 0.5):
        self.images = images
        self.crop = crop
        self.rescale_prob = rescale_prob
        self.gen = torch.Generator().manual_seed(seed)

    def _rand(self) -> float:
        return torch.rand((), generator=self.gen).item()

    def _one(self) -> torch.Tensor:
        img = self.images[int(torch.randint(len(self.images), (), generator=self.gen))]
        c = self.crop
        _, h, w = img.shape
        if self._rand() < self.rescale_prob:
            # Down-scaling adds detail density the training photos lack at full size.
            s = 0.5 + 0.5 * self._rand()
            src = min(int(c / s), h, w)
            top = int(self._rand() * (h - src + 1))
            left = int(self._rand() * (w - src + 1))
            patch = img[:, top:top + src, left:left + src].float()[None]
            patch = F.interpolate(patch, size=(c, c), mode="bilinear", antialias=True, align_corners=False)[0]
        else:
            top = int(self._rand() * (h - c + 1))
            left = int(self._rand() * (w - c + 1))
            patch = img[:, top:top + c, left:left + c].float()
        if self._rand() < 0.5:
            patch = patch.flip(-1)
        if self._rand() < 0.5:
            patch = patch.flip(-2)
        return patch.clamp(0, 255) / 255.0

    def batch(self, n: int) -> torch.Tensor:
        return torch.stack([self._one() for _ in range(n)])

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)


def validation_crops(images: list[torch.Tensor], size: int = 256) -> torch.Tensor:
    """Fixed centre crops of the validation images, [N, 3, size, size] in [0, 1]."""
    out = []
    for img in images:
        _, h, w = img.shape
        top, left = (h - size) // 2, (w - size) // 2
        out.append(img[:, top:top + size, left:left + size].float() / 255.0)
    return torch.stack(out)
