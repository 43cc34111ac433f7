"""Re-encoding generations: decode, re-encode at the same setting, repeat.

An image that is edited and saved again goes through a codec many times. For
each image and anfcodec quality this measures PSNR against the original after
every generation, for anfcodec and for JPEG 4:2:0 and WebP at the setting whose
first-generation rate is closest to anfcodec's (matched per image). Every
generation goes through 8-bit pixels, as a saved PNG would.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..metrics import psnr

# name -> (Pillow format, extra save options); the settings match bench.PILLOW_CODECS.
CLASSICAL = {"JPEG 4:2:0": ("JPEG", {}), "WebP m6": ("WEBP", {"method": 6})}


def anf_chain(rgb: np.ndarray, quality: float, generations: int,
              model_id: str | None = None) -> list[tuple[float, float]]:
    """(bpp, PSNR vs the original) for each generation of anfcodec at ``quality``."""
    from .. import api
    cur, out = rgb, []
    for _ in range(generations):
        data = api.encode(cur, quality=quality, model_id=model_id)
        cur = np.asarray(api.decode(data))
        out.append((8 * len(data) / (rgb.shape[0] * rgb.shape[1]), psnr(rgb, cur)))
    return out


def pillow_chain(rgb: np.ndarray, fmt: str, setting: int, extra: dict, generations: int) -> list[tuple[float, float]]:
    cur, out = rgb, []
    for _ in range(generations):
        buf = io.BytesIO()
        Image.fromarray(cur).save(buf, format=fmt, quality=setting, **extra)
        cur = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out.append((8 * buf.tell() / (rgb.shape[0] * rgb.shape[1]), psnr(rgb, cur)))
    return out


def matched_setting(rgb: np.ndarray, fmt: str, extra: dict, target_bpp: float) -> int:
    """The quality setting (1..100) whose first-generation rate is closest to ``target_bpp``."""
    lo, hi = 1, 100
    while hi - lo > 1:  # rate rises with the setting
        mid = (lo + hi) // 2
        if pillow_chain(rgb, fmt, mid, extra, 1)[0][0] < target_bpp:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda s: abs(pillow_chain(rgb, fmt, s, extra, 1)[0][0] - target_bpp))


def run(images: list[Path], qualities: list[float], generations: int = 10, model_id: str | None = None) -> dict:
    """Mean bpp and PSNR per generation, per anfcodec quality, for anfcodec and the matched classical codecs."""
    result = {"images": [p.name for p in images], "generations": generations, "rows": []}
    if model_id:
        result["model"] = model_id
    bar = tqdm(total=len(images) * len(qualities), desc="generations", unit="img")
    for q in qualities:
        chains: dict[str, list] = {"anfcodec": []}
        for path in images:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            anf = anf_chain(rgb, q, generations, model_id)
            chains["anfcodec"].append(anf)
            for name, (fmt, extra) in CLASSICAL.items():
                setting = matched_setting(rgb, fmt, extra, anf[0][0])
                chains.setdefault(name, []).append(pillow_chain(rgb, fmt, setting, extra, generations))
            bar.update(1)
        for name, runs in chains.items():
            arr = np.array(runs)  # [image, generation, (bpp, psnr)]
            result["rows"].append({"codec": name, "quality": q, "bpp": arr[:, 0, 0].mean().item(),
                                   "psnr": arr[:, :, 1].mean(axis=0).tolist()})
    bar.close()
    return result


def markdown(result: dict) -> str:
    n = result["generations"]
    shown = sorted({1, 2, 5, n} & set(range(1, n + 1)))
    model = f"Model {result['model']}. " if "model" in result else ""
    lines = [f"{model}Images: {', '.join(result['images'])}; {n} generations; JPEG and WebP at the setting whose "
             "first-generation rate matches anfcodec's on each image.", "",
             "| anfcodec quality | codec | bpp (gen 1) | " + " | ".join(f"PSNR gen {g}" for g in shown)
             + f" | loss gen 1 to {n} (dB) |",
             "|---|---|---|" + "---|" * len(shown) + "---|"]
    for r in result["rows"]:
        p = r["psnr"]
        lines.append(f"| {r['quality']:g} | {r['codec']} | {r['bpp']:.3f} | "
                     + " | ".join(f"{p[g - 1]:.2f}" for g in shown) + f" | {p[0] - p[-1]:.3f} |")
    return "\n".join(lines) + "\n"
