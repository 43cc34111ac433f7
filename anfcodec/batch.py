"""Batch mode: encode or decode many files, optionally in parallel worker processes.

One bad file never stops a batch: each file succeeds or fails on its own, the
summary counts both, and the CLI exits with 1 when any failed. Workers are
separate processes (spawned, so no torch state is inherited through fork),
each with its own model and ``cores // jobs`` torch threads.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .imageio import write_output

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm", ".pnm", ".webp", ".gif"}
ANF_SUFFIXES = {".anf"}


@dataclass
class Result:
    """What happened to one file: never an exception, so a batch (or a Dask/Ray map) carries on."""
    source: str
    output: str
    ok: bool
    in_bytes: int = 0
    bytes: int = 0          # the output file's size
    pixels: int = 0
    seconds: float = 0.0
    quality: float | None = None
    psnr: float | None = None  # encode with print_psnr: the decoded image against the input
    error: str = ""
    anf_bytes: int = 0      # the .anf side: the output of an encode, the input of a decode

    @property
    def bpp(self) -> float | None:
        """Bits per pixel of the .anf file."""
        return 8 * self.anf_bytes / self.pixels if self.ok and self.pixels else None

    def describe(self) -> str:
        """The one-line report of ``-v`` (and of ``decode --test``, which has no output)."""
        if not self.ok:
            return f"{self.source}: FAILED: {self.error}"
        what = f"{self.source} -> {self.output}: {self.bytes} bytes" if self.output else f"{self.source}: OK"
        line = f"{what}, {self.bpp:.4f} bpp, quality {self.quality:g}, {self.seconds:.2f} s"
        return line + (f", PSNR {self.psnr:.2f} dB" if self.psnr is not None else "")


def expand(inputs: list[str], suffixes: set[str]) -> list[Path]:
    """Files named directly, plus the files with ``suffixes`` directly inside named folders."""
    files = []
    for name in inputs:
        p = Path(name)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
        else:
            files.append(p)
    return files


def plan(files: list[Path], out_dir: Path, suffix: str) -> list[tuple[Path, Path]]:
    """(source, output) pairs; the output is ``out_dir/<stem><suffix>``."""
    return [(f, out_dir / (f.stem + suffix)) for f in files]


def _encode_one(src: Path, dst: Path, options: dict, force: bool) -> Result:
    from . import api
    from .container import unpack
    raw = src.read_bytes()
    opts = dict(options)
    targets = opts.pop("targets", None)  # rate control instead of a fixed quality
    print_psnr = opts.pop("print_psnr", False)
    data = api.encode_to_target(raw, **targets, **opts)[0] if targets else api.encode(raw, **opts)
    _check_free(dst, force)
    write_output(dst, data)
    h = unpack(data).header
    psnr = None
    if print_psnr:
        psnr = coded_psnr(raw, data)
    return Result(str(src), str(dst), True, len(raw), len(data), h.width * h.height, quality=h.quality, psnr=psnr,
                  anf_bytes=len(data))


def coded_psnr(image, data: bytes) -> float:
    """PSNR (dB) of the decoded ``data`` against the 8-bit RGB the encoder coded from ``image``."""
    from . import api
    from .imageio import open_image, split_image
    from .metrics import psnr
    coded = split_image(open_image(image), keep_metadata=False).rgb
    return psnr(coded, np.asarray(api.decode(data).convert("RGB")))


def _decode_one(src: Path, dst: Path | None, options: dict, force: bool) -> Result:
    """``dst`` None: decode and check only (``decode --test``), write nothing."""
    from . import decode
    from .container import unpack
    from .imageio import PNG_COMPRESS_DEFAULT, format_for, image_bytes
    raw = src.read_bytes()
    options = dict(options)
    png_compress = options.pop("png_compress", PNG_COMPRESS_DEFAULT)
    img = decode(raw, **options)
    h = unpack(raw).header
    if dst is None:
        return Result(str(src), "", True, len(raw), 0, img.width * img.height, quality=h.quality, anf_bytes=len(raw))
    data = image_bytes(img, format_for(dst), png_compress)
    _check_free(dst, force)
    write_output(dst, data)
    return Result(str(src), str(dst), True, len(raw), len(data), img.width * img.height, quality=h.quality,
                  anf_bytes=len(raw))


def _check_free(dst: Path, force: bool) -> None:
    from .imageio import would_replace
    if would_replace(dst) and not force:
        raise FileExistsError(f"{dst} exists; use -f to overwrite it")


WORKERS = {"encode": _encode_one, "decode": _decode_one}


def process(kind: str, src: Path, dst: Path, options: dict, force: bool) -> Result:
    """One file; any failure becomes a failed Result with a one-line reason."""
    start = time.perf_counter()
    try:
        result = WORKERS[kind](Path(src), None if dst is None else Path(dst), options, force)
    except Exception as e:  # noqa: BLE001 - a batch reports every failure and carries on
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        result = Result(str(src), "" if dst is None else str(dst), False, error=msg)
    result.seconds = time.perf_counter() - start
    return result


def _init_worker(threads: int) -> None:
    """A worker's threads: torch's where torch is installed (its workers decode with torch, warm,
    file after file); without torch, the torch-free decoder's strip threads, where numpy's BLAS
    runs one thread per call (the CLI's decode set OPENBLAS_NUM_THREADS=1 before numpy loaded,
    and spawned workers inherit it)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("OPENBLAS_NUM_THREADS") == "1":
            from .decoder.nets import use_strip_threads
            use_strip_threads(threads)
        return
    torch.set_num_threads(threads)


def run(kind: str, pairs: list[tuple[Path, Path | None]], options: dict, jobs: int = 1, force: bool = False,
        threads: int | None = None, report=None, progress: bool = True) -> list[Result]:
    """Process every (source, output) pair (output None: decode and check only); results in input order.

    ``threads``: threads of each worker (``_init_worker``) [default: cores // jobs]. ``report`` is called with
    each Result as it finishes (``-v``). The progress bar shows on a terminal only."""
    results: dict[int, Result] = {}
    seen: dict[Path, Path] = {}
    todo = []
    for i, (src, dst) in enumerate(pairs):
        key = None if dst is None else dst.resolve()
        if key is None:
            todo.append(i)
        elif key in seen:  # a.png and a.jpg would both become a.anf
            results[i] = Result(str(src), str(dst), False, error=f"output name collides with {seen[key]}")
        elif src.resolve() == key:
            results[i] = Result(str(src), str(dst), False, error="output would overwrite the input")
        else:
            seen[key] = src
            todo.append(i)
    bar = tqdm(total=len(pairs), desc=kind, unit="file", initial=len(results), disable=None if progress else True)

    def done(i: int, result: Result) -> None:
        results[i] = result
        bar.update(1)
        if report is not None:
            report(result)
    if jobs == 1 or len(todo) <= 1:
        if threads:
            _init_worker(threads)
        for i in todo:
            done(i, process(kind, *pairs[i], options, force))
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(process, kind, *pairs[i], options, force): i for i in todo}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    bar.close()
    return [results[i] for i in range(len(pairs))]


def summary(kind: str, results: list[Result]) -> str:
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    lines = [f"{kind}d {len(ok)} of {len(results)} files; {len(failed)} failed"]
    if ok:
        size_in, size_out = sum(r.in_bytes for r in ok), sum(r.bytes for r in ok)
        anf = size_out if kind == "encode" else size_in
        lines.append(f"  {size_in} bytes in, {size_out} bytes out; mean {8 * anf / sum(r.pixels for r in ok):.4f} bpp")
    lines += [f"  FAILED {r.source}: {r.error}" for r in failed]
    return "\n".join(lines)
