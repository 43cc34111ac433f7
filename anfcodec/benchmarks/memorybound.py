"""``anfcodec bench --memory``: peak memory of whole-image coding against image size.

Encodes (forced whole, no tiles) and decodes images from 0.4 to 2.7 megapixels,
each in a fresh worker process (``anfcodec.benchmarks.speed``), and reports where the peak
RSS crosses the memory bound (2 GB = 2e9 bytes): the largest size measured
within it, the smallest measured above it, and a straight-line fit in the
padded pixel count. Peak RSS scatters by about 5% from run to run (allocator
reuse), so the line is only a guide. ``api.WHOLE_MAX_PIXELS``, above which
images are coded as tiles, comes from this measurement: tiling starts only
where whole-image coding would exceed the bound.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .speed import _measure, mosaic

BOUND_MIB = 2e9 / 2**20  # 2 GB
# Sides are multiples of the padding (64), so the pixels measured are the pixels coded.
SIZES = [(768, 512), (960, 640), (1152, 768), (1216, 832), (1344, 896), (1472, 960), (1472, 1024), (1536, 1024),
         (1728, 1152), (1984, 1344)]


def padded_pixels(width: int, height: int) -> int:
    return -(-width // 64) * 64 * (-(-height // 64) * 64)


def run(sources: list[Path], quality: float = 4, sizes=SIZES) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for w, h in tqdm(sizes, desc="memory", unit="size"):
            png, anf = tmp / f"{w}x{h}.png", tmp / f"{w}x{h}.anf"
            mosaic(sources, w, h).save(png)
            enc = _measure("encode-whole", png, anf, 1, quality)
            dec = _measure("decode", anf, tmp / "out.png", 1, quality)
            rows.append({"width": w, "height": h, "megapixels": padded_pixels(w, h) / 1e6,
                         "encode_mib": enc["peak_rss_mb"], "decode_mib": dec["peak_rss_mb"]})
    mp = np.array([r["megapixels"] for r in rows])
    fits = {}
    for kind in ("encode", "decode"):
        slope, base = np.polyfit(mp, [r[f"{kind}_mib"] for r in rows], 1)
        fits[kind] = {"base_mib": float(base), "mib_per_mp": float(slope),
                      "bound_mp": float((BOUND_MIB - base) / slope)}
    within = [r["megapixels"] for r in rows if max(r["encode_mib"], r["decode_mib"]) <= BOUND_MIB]
    over = [r["megapixels"] for r in rows if max(r["encode_mib"], r["decode_mib"]) > BOUND_MIB]
    return {"quality": quality, "bound_mib": BOUND_MIB, "rows": rows, "fits": fits,
            "largest_within_mp": max(within, default=None), "smallest_over_mp": min(over, default=None),
            "cpu_count": os.cpu_count()}


def markdown(result: dict) -> str:
    b = result["bound_mib"]
    lines = [f"Quality {result['quality']:g}; whole-image coding (no tiles), each run in a fresh process; "
             f"peak RSS in MiB; the bound is 2 GB = {b:.0f} MiB.", "",
             "| image | megapixels | encode peak | decode peak | within the bound |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        ok = "yes" if max(r["encode_mib"], r["decode_mib"]) <= b else "**no**"
        lines.append(f"| {r['width']}x{r['height']} | {r['megapixels']:.3f} | {r['encode_mib']:.0f} | "
                     f"{r['decode_mib']:.0f} | {ok} |")
    lines += ["", "| fit | MiB at 0 MP | MiB per MP | reaches the bound at |", "|---|---|---|---|"]
    for kind, f in result["fits"].items():
        lines.append(f"| {kind} | {f['base_mib']:.0f} | {f['mib_per_mp']:.0f} | {f['bound_mp']:.3f} MP |")
    def mp(v):
        return "none" if v is None else f"{v:.3f} MP"
    lines += ["", f"Largest size measured within the bound: {mp(result['largest_within_mp'])}; "
              f"smallest measured above it: {mp(result['smallest_over_mp'])}."]
    return "\n".join(lines) + "\n"
