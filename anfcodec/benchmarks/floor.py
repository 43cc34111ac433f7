"""``anfcodec bench --floor``: the least time a 768x512 image could take, from its arithmetic alone.

The speed benchmark (``speed``) measures what the code does; this asks what any code could do.
It counts the multiply-accumulates of each network that encoding and decoding run (per
top-level module of the model, float path, and in total for the fixed-point decoder), the
same for CompressAI's mbt2018-mean at equal width, and measures this machine's best
matrix-product throughput in float32, float64, bfloat16 and int8 with all threads. Work
divided by the peak of the arithmetic it runs in is a lower bound on time that no kernel
tuning beats: the encoder's transforms in bfloat16 where the model encodes in it, else
float32; the fixed-point decoder's int8 digit products at the int8 peak and its other
convolutions at float64's. At equal efficiency the ratio of two codecs' times is the ratio
of their work.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from .. import arith
from .speed import count_macs, mbt2018_mean_at, mosaic

# Matrix products to find the peak with: square, and the shapes of the decoder's largest layer
# (128 -> 4x128 channels, 3x3, at a quarter of 768x512) and of the post-filter's (32 -> 32 at full size).
GEMM_SHAPES = [(2048, 2048, 2048), (24576, 1152, 512), (393216, 288, 32)]


def gemm_peak(dtype, shapes=GEMM_SHAPES, repeats: int = 3) -> float:
    """Best GMAC/s of ``torch.matmul`` (``torch._int_mm`` for int8) over ``shapes`` (rows, inner,
    columns), output preallocated for the floating-point types."""
    import torch
    best = 0.0
    for m, k, n in shapes:
        if dtype == torch.int8:
            a = torch.randint(-64, 64, (m, k), dtype=dtype)
            b = torch.randint(-64, 64, (k, n), dtype=dtype)

            def product():
                torch._int_mm(a, b)
        else:
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            out = torch.empty(m, n, dtype=dtype)

            def product():
                torch.matmul(a, b, out=out)
        product()
        t = time.perf_counter()
        for _ in range(repeats):
            product()
        best = max(best, m * k * n * repeats / (time.perf_counter() - t) / 1e9)
    return best


def run(sources: list[Path], quality: float = 4, width: int = 768, height: int = 512,
        model_id: str | None = None) -> dict:
    import torch

    from .. import api
    from ..zoo import default_model_id, load_model
    model_id = model_id or default_model_id()
    model = load_model(model_id, "cpu")
    image = mosaic(sources, width, height)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    raw = buf.getvalue()
    parts = dict(model.named_children())
    data = api.encode(raw, quality=quality, model_id=model_id)
    anf = {"encode": count_macs(lambda: api.encode(raw, quality=quality, model_id=model_id), parts),
           "decode (fixed point)": count_macs(lambda: api.decode(data), parts),
           "decode --fast (float32)": count_macs(lambda: api.decode(data, fast=True), parts)}

    net = mbt2018_mean_at(model.config.N)  # equal hidden width, as in the speed benchmark
    x = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
    mbt_parts = dict(net.named_children())
    with torch.inference_mode():
        enc = net.compress(x)
        mbt = {"encode": count_macs(lambda: net.compress(x), mbt_parts),
               "decode": count_macs(lambda: net.decompress(enc["strings"], enc["shape"]), mbt_parts)}
    peaks = {"float32": gemm_peak(torch.float32), "float64": gemm_peak(torch.float64),
             "bfloat16": gemm_peak(torch.bfloat16)}
    if arith.candidates()[0].name == "int8":
        peaks["int8"] = gemm_peak(torch.int8)
    encode_dtype = str(model.encode_dtype or torch.float32).removeprefix("torch.")
    return {"quality": quality, "size": f"{width}x{height}", "model": model_id, "mbt_width": model.config.N, "anfcodec": anf,
            "mbt2018_mean": mbt, "gemm_peak_gmac_s": peaks, "threads": torch.get_num_threads(),
            "encode_dtype": encode_dtype, "backends": arith.chosen()}


def least_time(path: str, gmac: dict, result: dict) -> float:
    """Seconds that ``path``'s work takes at the peaks of the arithmetic it runs in."""
    p = result["gemm_peak_gmac_s"]
    if "fixed" in path:  # digit-plane products at their backend's peak, the rest in float64
        rest = gmac["total"] - gmac.get("_digit", 0)
        return rest / p["float64"] + gmac.get("_int8", 0) / p.get("int8", 1) + gmac.get("_float32", 0) / p["float32"]
    if path == "encode" and result.get("encode_dtype") == "bfloat16":
        return gmac["total"] / p["bfloat16"]
    return gmac["total"] / p["float32"]


def floors(result: dict) -> list[tuple[str, float, float]]:
    """(path, GMAC, least seconds at the peaks of its arithmetic)."""
    rows = [(f"anfcodec {k}", v["total"], least_time(k, v, result)) for k, v in result["anfcodec"].items()]
    # mbt2018-mean's encoder is given the same precision as anfcodec's (the speed bench runs it so)
    rows += [(f"mbt2018-mean {k}", v["total"], least_time(k, v, result)) for k, v in result["mbt2018_mean"].items()]
    return rows


def markdown(result: dict) -> str:
    p = result["gemm_peak_gmac_s"]
    peaks = ", ".join(f"{k} {v:.1f}" for k, v in p.items())
    fixed = result["anfcodec"]["decode (fixed point)"]
    lines = [f"{result['size']} image, quality {result['quality']:g}, model {result['model']}, "
             f"{result['threads']} threads. Best matrix-product throughput measured here (GMAC/s): {peaks}. "
             f"Encoder transforms in {result.get('encode_dtype', 'float32')}; the fixed-point decoder ran "
             f"{fixed.get('_digit', 0):.1f} of its {fixed['total']:.1f} GMAC as digit-plane products "
             f"({fixed.get('_int8', 0):.1f} G int8 and {fixed.get('_float32', 0):.1f} G float32 plane MACs), "
             f"the rest in float64. Backends chosen: "
             + ", ".join(f"{k}: {v}" for k, v in result.get("backends", {}).items()) + ".", "",
             "| path | GMAC | least time at the peaks of its arithmetic (s) |", "|---|---|---|"]
    lines += [f"| {name} | {g:.1f} | {s:.2f} |" for name, g, s in floors(result)]
    f = {name: s for name, _, s in floors(result)}
    enc = f["anfcodec encode"] / f["mbt2018-mean encode"]
    dec = f["anfcodec decode --fast (float32)"] / f["mbt2018-mean decode"]
    lines += ["", f"mbt2018-mean at N={result.get('mbt_width', 128)}, M=192 (equal hidden width). "
              f"At equal efficiency the time ratio against mbt2018-mean is the work ratio: "
              f"encode {enc:.2f}, decode {dec:.2f} (float32 paths).", ""]
    for codec, paths in (("anfcodec", result["anfcodec"]), ("mbt2018-mean", result["mbt2018_mean"])):
        names = [n for n in next(iter(paths.values())) if n != "total" and not n.startswith("_")
                 and any(v[n] > 0.005 for v in paths.values())]
        lines += [f"GMAC per network, {codec} (float-path modules; fixed-point networks count as 'other'):", "",
                  "| network | " + " | ".join(paths) + " |", "|---|" + "---|" * len(paths)]
        lines += [f"| {n} | " + " | ".join(f"{v[n]:.2f}" for v in paths.values()) + " |" for n in names]
        lines.append("")
    return "\n".join(lines)
