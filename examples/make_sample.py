"""Regenerate examples/sample.png: a synthetic, licence-free 'photograph'.

Sky gradient, textured hills, a sun, soft and hard edges and fine texture,
so the codec has something photo-like to chew on without shipping anyone's
photographs. Deterministic (fixed seed).
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make(width: int = 384, height: int = 256, seed: int = 7) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    sky = np.stack([90 + 80 * yy / height, 140 + 70 * yy / height, 230 - 40 * yy / height], -1)
    img = sky
    for k, (base, amp, col) in enumerate([(0.55, 0.08, (70, 120, 60)), (0.7, 0.06, (50, 95, 40)),
                                          (0.85, 0.04, (110, 90, 60))]):
        ridge = height * (base + amp * np.sin(xx / width * (3 + 2 * k) * np.pi + k))
        mask = (yy > ridge)[..., None]
        tex = rng.normal(0, 12 + 6 * k, (height, width, 1))
        img = np.where(mask, np.array(col) + tex, img)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    draw.ellipse([width * 0.72, height * 0.08, width * 0.84, height * 0.26], fill=(250, 230, 150))
    for i in range(12):  # a fence: hard edges
        x = int(width * 0.05 + i * width * 0.03)
        draw.rectangle([x, int(height * 0.78), x + 4, int(height * 0.95)], fill=(230, 225, 215))
    im = im.filter(ImageFilter.GaussianBlur(0.6))
    return im


if __name__ == "__main__":
    out = Path(__file__).with_name("sample.png")
    make().save(out)
    print(f"wrote {out}")
