"""The high-rate end of the RD curve: near-lossless and lossless coding against JPEG XL, AVIF, WebP and PNG.

anfcodec runs lossy at its top three qualities, and with the near-lossless layer
(``max_error`` N, 0 = lossless) on its default base quality (``api.NEAR_LOSSLESS_BASE``); JPEG XL at small distances
and lossless, AVIF at high qualities, WebP and PNG lossless. For every codec the
table gives the rate at which the mean PSNR reaches 42, 45 and 50 dB (log-rate
interpolated between measured points) and its lossless rate.
"""
from __future__ import annotations

import io
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .rd import _jxl_point, _pillow_point
from ..metrics import psnr

ANF_MAX_ERRORS = [4, 3, 2, 1, 0]
JXL_DISTANCES = [0.5, 0.3, 0.2, 0.1, 0.05, 0.0]
AVIF_QUALITIES = [90, 95, 98, 100]
PSNR_TARGETS = [42.0, 45.0, 50.0]


def _anf_point(rgb: np.ndarray, quality: float | None, max_error: int | None) -> tuple[int, np.ndarray]:
    from .. import api
    data = api.encode(rgb, quality=quality, max_error=max_error)
    return len(data), np.asarray(api.decode(data))


def _png_point(img: Image.Image, fmt: str, extra: dict) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **extra)
    return buf.tell(), np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def jobs(have_jxl: bool) -> list[tuple[str, object]]:
    from ..zoo import quality_range
    top = int(quality_range()[1])
    out = [("anfcodec lossy", f"q{q}") for q in range(top - 2, top + 1)]
    from .. import api
    base = min(api.NEAR_LOSSLESS_BASE, top)
    out += [(f"anfcodec q{base:g} + near-lossless", e) for e in ANF_MAX_ERRORS]
    if have_jxl:
        out += [("JPEG XL (cjxl 0.7 e7)", d) for d in JXL_DISTANCES]
    out += [("AVIF (libavif/aom s4 4:4:4)", q) for q in AVIF_QUALITIES]
    out += [("WebP lossless", None), ("PNG (optimize)", None)]
    return out


def run(images: list[Path]) -> dict:
    have_jxl = bool(shutil.which("cjxl") and shutil.which("djxl"))
    todo = jobs(have_jxl)
    points: dict[str, list] = {}
    bar = tqdm(total=len(todo) * len(images), desc="high rate", unit="img")
    with tempfile.TemporaryDirectory() as td:
        for name, setting in todo:
            bpp, ps = [], []
            for path in images:
                img = Image.open(path).convert("RGB")
                rgb = np.asarray(img)
                if name == "anfcodec lossy":
                    size, rec = _anf_point(rgb, float(setting[1:]), None)
                elif name.startswith("anfcodec"):
                    size, rec = _anf_point(rgb, None, setting)
                elif name.startswith("JPEG XL"):
                    size, rec, _ = _jxl_point(path, setting, Path(td))
                elif name.startswith("AVIF"):
                    size, rec, _ = _pillow_point(img, "AVIF", setting, {"speed": 4, "subsampling": "4:4:4"})
                elif name.startswith("WebP"):
                    size, rec = _png_point(img, "WEBP", {"lossless": True, "method": 6})
                else:
                    size, rec = _png_point(img, "PNG", {"optimize": True})
                bpp.append(8 * size / (rgb.shape[0] * rgb.shape[1]))
                ps.append(psnr(rgb, rec))
                bar.update(1)
            points.setdefault(name, []).append({"setting": setting, "bpp": float(np.mean(bpp)),
                                                "psnr": float(np.mean(ps)),
                                                "lossless": bool(all(math.isinf(p) for p in ps))})
    bar.close()
    return {"images": len(images), "codecs": points,
            "rate_at": {name: {str(t): rate_at(p, t) for t in PSNR_TARGETS} for name, p in points.items()}}


def rate_at(points: list[dict], target: float) -> float | None:
    """bpp at mean PSNR ``target``, interpolated linearly in log-rate between the bracketing lossy points."""
    lossy = sorted((p["bpp"], p["psnr"]) for p in points if not p["lossless"])
    for (r0, p0), (r1, p1) in zip(lossy, lossy[1:]):
        if min(p0, p1) <= target <= max(p0, p1) and p0 != p1:
            t = (target - p0) / (p1 - p0)
            return float(math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0))))
    return None


def _describe(p: dict) -> str:
    quality = "lossless" if p["lossless"] else f"{p['psnr']:.2f}"
    return f"{p['bpp']:.2f} / {quality}" if p["setting"] is None else f"{p['setting']}: {p['bpp']:.2f} / {quality}"


def markdown(result: dict) -> str:
    lines = [f"Images: {result['images']}. Rate (bpp) at which the mean PSNR reaches each target; "
             "'-' where the codec's measured points do not bracket it.", "",
             "| codec | " + " | ".join(f"bpp at {t:g} dB" for t in PSNR_TARGETS) + " | lossless bpp | "
             "points (setting: bpp / dB) |",
             "|---|" + "---|" * len(PSNR_TARGETS) + "---|---|"]
    for name, pts in result["codecs"].items():
        at = result["rate_at"][name]
        cells = [f"{at[str(t)]:.2f}" if at[str(t)] is not None else "-" for t in PSNR_TARGETS]
        lossless = [p["bpp"] for p in pts if p["lossless"]]
        lines.append(f"| {name} | {' | '.join(cells)} | {f'{lossless[0]:.2f}' if lossless else '-'} | "
                     + ", ".join(_describe(p) for p in pts) + " |")
    return "\n".join(lines) + "\n"
