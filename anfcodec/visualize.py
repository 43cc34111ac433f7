"""Pictures of the encoder's decisions: the multiscale split map drawn over the decoded image.

Numpy and Pillow only; ``anfcodec info --split-map`` uses it after decoding the file.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

COARSE_TINT = np.array([40, 110, 255], dtype=np.float64)   # blue: regions coded at the coarse scale
FINE_TINT = np.array([255, 150, 30], dtype=np.float64)     # orange: regions coded at the fine scale


def draw_split_map(image: Image.Image, maps: list[tuple[int, np.ndarray]],
                   boxes: list[tuple[int, int, int, int]], alpha: float = 0.35) -> Image.Image:
    """Tint each region by its scale (coarse blue, fine orange) and outline the regions.

    ``maps``: per tile, (region side in pixels, boolean map with True = fine) covering the
    tile padded to whole regions; ``boxes``: the tiles' (x0, y0, x1, y1) in the image.
    """
    rgb = np.asarray(image.convert("RGB")).astype(np.float64)
    out = rgb.copy()
    for (region, split), (x0, y0, x1, y1) in zip(maps, boxes, strict=True):
        fine = np.repeat(np.repeat(split, region, 0), region, 1)[: y1 - y0, : x1 - x0]
        tint = np.where(fine[..., None], FINE_TINT, COARSE_TINT)
        tile = out[y0:y1, x0:x1]
        tile[:] = (1 - alpha) * tile + alpha * tint
        edge = np.zeros(fine.shape, dtype=bool)  # region borders, one pixel wide
        edge[::region, :] = edge[:, ::region] = True
        tile[edge] = 0.5 * tile[edge]
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
