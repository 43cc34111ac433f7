"""``anfcodec bench --tiling PX``: what coding an image as independent tiles costs against coding it whole.

Large images are coded as tiles (``api.tile_size``) to bound memory. Here every
image is coded both ways at one quality: whole, and as tiles of at most PX
pixels a side. The whole-image curve at the neighbouring qualities (q - 1, q,
q + 1) gives the rate that whole-image coding would need for the tiled PSNR
(log-rate interpolated linearly in PSNR), so the cost is a rate at equal PSNR.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..metrics import psnr
from ..zoo import quality_range


def _point(rgb: np.ndarray, quality: float, tile: int | None) -> tuple[float, float]:
    from .. import api
    data = api.encode(rgb, quality=quality, tile=tile)
    return 8 * len(data) / (rgb.shape[0] * rgb.shape[1]), psnr(rgb, np.asarray(api.decode(data)))


def rate_at(points: list[tuple[float, float]], target_psnr: float) -> float:
    """bpp at ``target_psnr`` on a curve of (bpp, PSNR) points: log-rate linear in PSNR, extrapolated at the ends."""
    pts = sorted(points, key=lambda p: p[1])
    i = max(1, min(len(pts) - 1, next((k for k, p in enumerate(pts) if p[1] >= target_psnr), len(pts) - 1)))
    (r0, d0), (r1, d1) = pts[i - 1], pts[i]
    t = (target_psnr - d0) / (d1 - d0)
    return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))


def run(images: list[Path], quality: float, tile: int) -> dict:
    rows = []
    top = quality_range()[1]
    qualities = [q for q in (quality - 1, quality, quality + 1) if 1 <= q <= top]
    for path in tqdm(images, desc="tiling", unit="image"):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        whole = {q: _point(rgb, q, None) for q in qualities}
        tiled = _point(rgb, quality, tile)
        equal = rate_at(list(whole.values()), tiled[1])
        rows.append({"image": path.name, "width": rgb.shape[1], "height": rgb.shape[0],
                     "whole": whole[quality], "tiled": tiled, "whole_rate_at_tiled_psnr": equal,
                     "cost_percent": 100 * (tiled[0] / equal - 1)})
    costs = [r["cost_percent"] for r in rows]
    return {"quality": quality, "tile": tile, "rows": rows, "mean_cost_percent": float(np.mean(costs)),
            "max_cost_percent": float(np.max(costs))}


def markdown(result: dict) -> str:
    from ..api import tile_size
    lines = [f"Quality {result['quality']:g}, tiles of at most {result['tile']} pixels a side. Cost: extra rate of "
             "the tiled file over whole-image coding at the tiled PSNR (whole-image curve at the neighbouring "
             "qualities).", "",
             "| image | tiles | whole bpp / dB | tiled bpp / dB | cost at equal PSNR |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        tw, th = tile_size(r["width"], r["height"], result["tile"]) or (r["width"], r["height"])
        n = math.ceil(r["width"] / tw) * math.ceil(r["height"] / th)
        lines.append(f"| {r['image']} | {n} of {tw}x{th} | {r['whole'][0]:.4f} / {r['whole'][1]:.2f} | "
                     f"{r['tiled'][0]:.4f} / {r['tiled'][1]:.2f} | {r['cost_percent']:+.2f}% |")
    lines += ["", f"**Mean cost {result['mean_cost_percent']:+.2f}%**, worst image {result['max_cost_percent']:+.2f}%."]
    return "\n".join(lines) + "\n"
