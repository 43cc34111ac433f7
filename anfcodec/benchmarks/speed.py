"""``anfcodec bench --speed``: wall time, peak memory and time split of encode and decode per image size.

Decoding is timed on the default fixed-point path and, at 768x512, on the
float32 ``--fast`` path. Every measurement runs in a fresh worker process (``python -m anfcodec.benchmarks.speed``),
so its peak RSS is that of one encode or one decode. The worker loads the
model and warms up before the clock starts; model loading is reported apart.
Test images are mosaics of the benchmark folder's photographs (or of
``examples/sample.png``) at 768x512 and 2, 6, 12 and 24 megapixels. Before the clock starts each
worker first repeats the same kind of work on a 512x512 image for ``settle_s`` seconds: these
CPUs run faster for the first seconds after an idle phase (a 768x512 encode took 0.61 s right
after one and 0.76-0.79 s sustained), so without it short runs and long ones were timed at
different clock speeds, and time per megapixel followed run length instead of image size. CompressAI's
mbt2018-mean at the same hidden width N as the measured model (M=192, random weights: its
speed does not depend on training) is timed on the 768x512 image in the same way. At 768x512 each
worker also counts the multiply-accumulates of one more run (see ``_gmac``), which tells apart how much work a codec does from how fast it does it.
Last, whole ``anfcodec encode`` and ``decode`` commands on ``examples/sample.png``
are timed: what a one-off shell call costs, process start included.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

SIZES = [("768x512", 768, 512), ("2 MP", 1728, 1152), ("6 MP", 3000, 2000), ("12 MP", 4240, 2832),
         ("24 MP", 6000, 4000)]
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample.png"


def mosaic(sources: list[Path], width: int, height: int) -> Image.Image:
    """Photographs laid side by side (cycling) to fill width x height: photo-like content at any size."""
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sources]
    out = np.empty((height, width, 3), dtype=np.uint8)
    i, y = 0, 0
    while y < height:
        x, row_h = 0, 0
        while x < width:
            t = tiles[i % len(tiles)]
            i += 1
            h, w = min(t.shape[0], height - y), min(t.shape[1], width - x)
            out[y:y + h, x:x + w] = t[:h, :w]
            x, row_h = x + w, max(row_h, h)
        y += row_h
    return Image.fromarray(out)


def _peak_rss_mb() -> float:
    """This process's own peak RSS in MiB.

    Linux's ``ru_maxrss`` is not that: ``execve`` folds the parent's high-water mark
    into the child's, so a worker started from a large process (a long pytest run)
    reports the parent's peak. ``VmHWM`` belongs to the address space, which exec
    replaces, so it counts the worker alone."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, no /proc elsewhere


def _gmac(run) -> float:
    """Multiply-accumulates (billions) of the convolutions and matrix products in ``run()``."""
    return count_macs(run)["total"]


def count_macs(run, modules: dict | None = None) -> dict[str, float]:
    """GMAC of the convolutions and matrix products in ``run()``: in total, and per named module.

    Counted by wrapping ``F.conv2d``, ``F.conv_transpose2d`` and ``torch.matmul`` for the
    duration of the run (this process only): PyTorch's dispatch-mode counters see
    nothing under ``inference_mode``, and its profiler skips transposed convolutions. A
    convolution costs (C_in / groups) * k^2 per output sample; a transposed one C_out * k^2
    per input sample (zero taps included: that is work done). ``modules`` (name -> module)
    attributes work done inside a module's ``forward`` to its name; the rest (the fixed-point
    networks, which use the weights but not the modules) is counted as "other".

    The fixed-point networks' digit-plane products (``arith``) count at their convolution's
    size, like the rest (``arith.count_products``), and the result also holds the share they are
    of it (``_digit``) and the plane multiply-accumulates they took per backend (``_int8``,
    ``_float32``: float32 planes, multiplied as matrices or as convolutions, ``conv32``).
    """
    import torch
    import torch.nn.functional as F

    from .. import arith
    totals = {name: 0 for name in modules or {}}
    totals["other"] = 0
    digit = {"_digit": 0, "_int8": 0, "_float32": 0}
    scope = ["other"]
    conv2d, conv_t, matmul = F.conv2d, F.conv_transpose2d, torch.matmul

    def add(n: int) -> None:
        totals[scope[-1]] += n

    def count_conv(x, w, *args, **kwargs):
        out = conv2d(x, w, *args, **kwargs)
        add(out.numel() * w[0].numel())
        return out

    def count_conv_t(x, w, *args, **kwargs):
        add(x.numel() * w[0].numel())
        return conv_t(x, w, *args, **kwargs)

    def count_matmul(a, b, *args, **kwargs):
        out = matmul(a, b, *args, **kwargs)
        add(out.numel() * a.shape[-1])
        return out

    def leave(module, args, out) -> None:  # a hook that returned something would replace the output
        scope.pop()
    hooks = []
    for name, module in (modules or {}).items():
        hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: scope.append(name)))
        hooks.append(module.register_forward_hook(leave))
    F.conv2d, F.conv_transpose2d, torch.matmul = count_conv, count_conv_t, count_matmul
    try:
        with arith.count_products() as products:
            run()
    finally:
        F.conv2d, F.conv_transpose2d, torch.matmul = conv2d, conv_t, matmul
        for h in hooks:
            h.remove()
    totals["other"] += products["macs"]  # the fixed-point networks run outside the modules' forward
    digit["_digit"] = products["macs"] - products["planes"].get("float64", 0)
    digit["_int8"] = products["planes"].get("int8", 0)
    digit["_float32"] = products["planes"].get("float32", 0) + products["planes"].get("conv32", 0)
    gmac = {name: n / 1e9 for name, n in {**totals, **digit}.items()}
    gmac["total"] = sum(totals.values()) / 1e9
    return gmac


def mbt2018_mean_at(width: int):
    """CompressAI's mean-scale hyperprior (mbt2018-mean) at hidden width N=``width``, M=192, random
    weights, tables built: the work and speed of a conventional autoencoder codec of that width."""
    from compressai.models import MeanScaleHyperprior
    net = MeanScaleHyperprior(N=width, M=192).eval()
    net.update(force=True)
    return net


def model_width(model_id: str) -> int:
    """Hidden width N of an installed model (what 'equal width' compares at)."""
    from ..zoo import find_entry
    return int(find_entry(model_id)["config"]["N"])


def _settle(work, seconds: float) -> int:
    """Repeat ``work()`` for ``seconds`` (at least once when seconds > 0); the number of runs."""
    runs, t0 = 0, time.perf_counter()
    while seconds > 0 and (not runs or time.perf_counter() - t0 < seconds):
        work()
        runs += 1
    return runs


def _settle_image() -> np.ndarray:
    return np.asarray(mosaic([SAMPLE], 512, 512))


def worker(kind: str, src: str, dst: str, repeats: int, quality: float, count: bool = False,
           model_id: str | None = None, width: int = 128, settle_s: float = 0.0) -> dict:
    """Runs in its own process: time ``repeats`` encodes or decodes of ``src``; write the last to ``dst``.

    With ``count``, one more run (untimed) counts the multiply-accumulates. ``mbt-*`` kinds time
    mbt2018-mean at hidden width ``width`` instead of ``model_id``. First the same kind of work runs
    on a 512x512 image for ``settle_s`` seconds (see the module's docstring)."""
    import torch
    from .. import api
    from ..imageio import image_bytes
    from ..timing import phase, record
    t0 = time.perf_counter()
    if kind.startswith("mbt"):
        return _mbt_worker(kind, src, repeats, t0, count, width, settle_s)
    from ..zoo import default_model_id, load_model
    model_id = model_id or default_model_id()
    load_model(model_id, "cpu")
    api.decode(api.encode(np.zeros((64, 64, 3), np.uint8), quality=quality, model_id=model_id))  # warm-up
    load_s = time.perf_counter() - t0
    settled = 0
    if settle_s > 0:
        settle = _settle_image()
        if kind.startswith("encode"):
            settled = _settle(lambda: api.encode(settle, quality=quality, model_id=model_id), settle_s)
        else:
            settle_anf = api.encode(settle, quality=quality, model_id=model_id)
            settled = _settle(lambda: api.decode(settle_anf, fast=kind == "decode-fast"), settle_s)
    raw = Path(src).read_bytes()
    tile = None
    if kind == "encode-whole":  # no tiles whatever the size: one tile as large as the image
        with Image.open(src) as im:
            tile = -(-max(im.size) // 64) * 64
    times, phases = [], {}
    for _ in range(repeats):
        with record() as totals:
            t = time.perf_counter()
            if kind.startswith("encode"):
                out = api.encode(raw, quality=quality, tile=tile, model_id=model_id)
            else:
                img = api.decode(raw, fast=kind == "decode-fast")
                with phase("io"):
                    out = image_bytes(img, "PNG")
            times.append(time.perf_counter() - t)
        phases = dict(totals)  # of the last repeat
    Path(dst).write_bytes(out)
    from .. import arith
    result = {"times": times, "phases": phases, "load_s": load_s, "peak_rss_mb": _peak_rss_mb(),
              "threads": torch.get_num_threads(), "settle_s": settle_s, "settle_runs": settled,
              "backends": arith.chosen()}
    if count:
        result["gmac"] = _gmac(lambda: api.encode(raw, quality=quality, tile=tile, model_id=model_id)
                               if kind.startswith("encode")
                               else api.decode(raw, fast=kind == "decode-fast"))
    return result


def _mbt_worker(kind: str, src: str, repeats: int, t0: float, count: bool, width: int, settle_s: float) -> dict:
    """Time mbt2018-mean along the same path as anfcodec's workers: encoding starts from the PNG's
    bytes and decoding ends with PNG bytes, so both codecs pay the same image I/O (phase ``io``)."""
    import contextlib

    import torch

    from ..imageio import image_bytes, open_image
    from ..models.anfic import encoder_autocast_dtype
    from ..timing import phase, record
    net = mbt2018_mean_at(width)
    # Its encoder gets the autocast anfcodec's encoder runs under, so the ratio compares like with like.
    dtype = encoder_autocast_dtype("cpu") if kind == "mbt-encode" else None
    amp = contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)
    raw = Path(src).read_bytes()
    photo = Image.open(src).convert("RGB")

    def tensor(rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255

    def encode(data: bytes):
        with phase("io"):
            x = tensor(np.asarray(open_image(data).convert("RGB")))
        with phase("model"):  # model and entropy coding: CompressAI runs both in one call
            return net.compress(x)

    def decode(enc: dict) -> bytes:
        with phase("model"):
            x = net.decompress(enc["strings"], enc["shape"])["x_hat"]
        with phase("io"):
            (x[0] * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()  # to 8 bits, as anfcodec does
            # Random weights decode to a near-flat image that deflates 7x faster than a photo; a
            # trained model's output is a photo, so the PNG written is the source's (same size).
            return image_bytes(photo, "PNG")

    load_s = time.perf_counter() - t0
    settle_png = image_bytes(Image.fromarray(_settle_image()), "PNG")
    times, phases = [], {}
    with torch.inference_mode(), amp:
        encode(image_bytes(photo.crop((0, 0, 64, 64)), "PNG"))
        enc, enc_s = encode(raw), encode(settle_png)
        settled = _settle(lambda: encode(settle_png) if kind == "mbt-encode" else decode(enc_s), settle_s)
        for _ in range(repeats):
            with record() as totals:
                t = time.perf_counter()
                encode(raw) if kind == "mbt-encode" else decode(enc)
                times.append(time.perf_counter() - t)
            phases = dict(totals)
        gmac = _gmac(lambda: net.compress(tensor(np.asarray(photo)))
                     if kind == "mbt-encode" else net.decompress(enc["strings"], enc["shape"])) if count else None
    result = {"times": times, "phases": phases, "load_s": load_s, "peak_rss_mb": _peak_rss_mb(),
              "threads": torch.get_num_threads(), "autocast": str(dtype).removeprefix("torch.") if dtype else None,
              "settle_s": settle_s, "settle_runs": settled}
    return result if gmac is None else {**result, "gmac": gmac}


def _measure(kind: str, src: Path, dst: Path, repeats: int, quality: float, count: bool = False,
             model_id: str | None = None, width: int = 128, settle_s: float = 0.0) -> dict:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "anfcodec.benchmarks.speed", kind, str(src), str(dst), str(repeats), str(quality),
                        "count" if count else "time", model_id or "", str(width), str(settle_s)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode:
        raise RuntimeError(f"{kind} {src.name} failed: {r.stderr.strip().splitlines()[-1:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


SETTLE_S = 20.0  # the settled rate: a 768x512 encode held 0.74-0.82 s over 50 s of repeats once busy this long


def run(sources: list[Path], quality: float = 4, repeats: int = 5, sizes=SIZES, model_id: str | None = None,
        settle_s: float = SETTLE_S) -> dict:
    from ..zoo import default_model_id
    model_id = model_id or default_model_id()
    width = model_width(model_id)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        jobs = [(name, w, h) for name, w, h in sizes]
        bar = tqdm(total=2 * len(jobs) + 2, desc="speed", unit="run")
        for name, w, h in jobs:
            png, anf, rec = tmp / f"{w}x{h}.png", tmp / f"{w}x{h}.anf", tmp / f"{w}x{h}.dec.png"
            mosaic(sources, w, h).save(png)
            n = repeats if w * h <= 768 * 512 else 1
            first = not rows
            enc = _measure("encode", png, anf, n, quality, count=first, model_id=model_id, settle_s=settle_s)
            bar.update(1)
            dec = _measure("decode", anf, rec, n, quality, count=first, model_id=model_id, settle_s=settle_s)
            bar.update(1)
            rows.append({"size": name, "width": w, "height": h, "megapixels": w * h / 1e6, "repeats": n,
                         "encode": enc, "decode": dec, "bytes": anf.stat().st_size})
        png = tmp / "768x512.png"
        fast = _measure("decode-fast", tmp / "768x512.anf", tmp / "fast.png", repeats, quality, count=True,
                        model_id=model_id, settle_s=settle_s)
        mbt = {k: _measure(f"mbt-{k}", png, tmp / "unused", repeats, quality, count=True, width=width,
                           settle_s=settle_s)
               for k in ("encode", "decode")}
        bar.update(2)
        bar.close()
        cli = cli_calls(SAMPLE, tmp, quality, model_id)
    from . import machine
    return {"quality": quality, "model": model_id, "mbt_width": width, "rows": rows, "decode_fast": fast,
            "mbt2018_mean": mbt, "cli": cli, "cpu_count": os.cpu_count(), "settle_s": settle_s, "machine": machine()}


def cli_calls(image: Path, tmp: Path, quality: float, model_id: str | None = None, repeats: int = 3) -> dict:
    """Wall time of whole ``anfcodec encode`` / ``decode`` commands on a small image: what a
    one-off shell call costs, process start and model loading included."""
    def call(*args) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "anfcodec.cli", *map(str, args)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return time.perf_counter() - t
    anf = tmp / "cli.anf"
    model = ["--model", model_id] if model_id else []
    enc = [call("encode", image, "-o", anf, "-q", quality, "-f", *model) for _ in range(repeats)]
    dec = [call("decode", anf, "-o", tmp / "cli.png", "-f") for _ in range(repeats)]
    with Image.open(image) as im:
        size = "x".join(map(str, im.size))
    return {"image": image.name, "size": size, "encode": enc, "decode": dec}


def markdown(result: dict) -> str:
    def med(m):
        return statistics.median(m["times"])

    model = f"model {result['model']}, " if "model" in result else ""
    settle = result.get("settle_s")
    settled = (f", each after {settle:g} s of the same kind of work on a 512x512 image (the CPUs' sustained clock)"
               if settle else "")
    from . import describe_machine
    where = f" Measured on {describe_machine(result['machine'])}." if "machine" in result else ""
    backends = result["rows"][0]["decode"].get("backends")
    chosen = (" Exact products chosen by the decoder: " + "; ".join(f"{k}: {v}" for k, v in backends.items()) + "."
              if backends else "")
    lines = [f"{model}Quality {result['quality']:g}, {result['cpu_count']} CPU cores; codec time is the median of the "
             f"repeats inside one warm process (model loaded){settled}; peak RSS is that process's.{where}{chosen}", "",
             "| image | encode s | decode s | encode s/MP | decode s/MP | peak RSS enc / dec (MB) | "
             "encode split model / entropy / io | decode split model / entropy / io |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        e, d = r["encode"], r["decode"]

        def split(m):
            return " / ".join(f"{m['phases'].get(k, 0.0):.2f}" for k in ("model", "entropy", "io"))

        lines.append(f"| {r['size']} ({r['width']}x{r['height']}) | {med(e):.2f} | {med(d):.2f} | "
                     f"{med(e) / r['megapixels']:.2f} | {med(d) / r['megapixels']:.2f} | "
                     f"{e['peak_rss_mb']:.0f} / {d['peak_rss_mb']:.0f} | {split(e)} | {split(d)} |")
    mbt = result["mbt2018_mean"]
    first = result["rows"][0]
    enc, dec, fast = first["encode"], first["decode"], result["decode_fast"]
    autocast = mbt["encode"].get("autocast")
    amp = f"; encoder under {autocast} autocast, as anfcodec's" if autocast else ""

    def gmac(m):
        return f"{m['gmac']:.1f}" if "gmac" in m else ""

    def ratio(a, b, key):
        return f"{a[key] / b[key]:.2f}" if key in a and key in b else ""
    def no_io(m):  # the codec's own work: median wall time less the (last repeat's) image I/O
        return med(m) - m["phases"].get("io", 0.0)

    def ratios(label, f):
        return (f"| {label} | {f(enc) / f(mbt['encode']):.2f} | {f(dec) / f(mbt['decode']):.2f} | "
                f"{ratio(enc, mbt['encode'], 'gmac')} | {ratio(dec, mbt['decode'], 'gmac')} |")
    lines += ["", "| 768x512, same process conditions (PNG bytes in, PNG bytes out) | encode s | decode s | "
              "encode GMAC | decode GMAC |",
              "|---|---|---|---|---|",
              f"| anfcodec | {med(enc):.2f} | {med(dec):.2f} | {gmac(enc)} | {gmac(dec)} |",
              f"| anfcodec decode --fast (float32 synthesis, not bit-exact across machines) | | "
              f"{med(fast):.2f} | | {gmac(fast)} |",
              f"| ratio bit-exact decode / float32 decode | | {med(dec) / med(fast):.2f} | | |",
              f"| CompressAI mbt2018-mean (N={result.get('mbt_width', 128)}, M=192{amp}) | {med(mbt['encode']):.2f} | "
              f"{med(mbt['decode']):.2f} | {gmac(mbt['encode'])} | {gmac(mbt['decode'])} |",
              ratios("ratio anfcodec / mbt2018-mean", med),
              ratios("ratio without image I/O (codec work only, both sides)", no_io)]
    cli = result.get("cli")
    if cli:
        lines += ["", "| one-off command on " + f"{cli['image']} ({cli['size']}), process start included | "
                  "encode s | decode s |", "|---|---|---|",
                  f"| `anfcodec encode` / `anfcodec decode` | {statistics.median(cli['encode']):.2f} | "
                  f"{statistics.median(cli['decode']):.2f} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    kind, src, dst, repeats, quality, mode, model_id, width, settle_s = sys.argv[1:10]
    print(json.dumps(worker(kind, src, dst, int(repeats), float(quality), count=mode == "count",
                            model_id=model_id or None, width=int(width), settle_s=float(settle_s))))
