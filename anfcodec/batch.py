"""Batch mode: encode or decode many files, optionally in parallel worker processes.

One bad file never stops a batch: each file succeeds or fails on its own, the
summary counts both, and the CLI exits with 1 when any failed. Workers are
separate processes (spawned, so no torch state is inherited through fork),
each with its own model and ``cores // jobs`` torch threads.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm", ".pnm", ".webp", ".gif"}
ANF_SUFFIXES = {".anf"}


@dataclass
class Result:
    source: str
    output: str
    ok: bool
    in_bytes: int = 0
    out_bytes: int = 0
    pixels: int = 0
    error: str = ""


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
    from .imageio import write_output
    raw = src.read_bytes()
    opts = dict(options)
    targets = opts.pop("targets", None)  # rate control instead of a fixed quality
    data = api.encode_to_target(raw, **targets, **opts)[0] if targets else api.encode(raw, **opts)
    _check_free(dst, force)
    write_output(dst, data)
    from .container import unpack
    h = unpack(data).header
    return Result(str(src), str(dst), True, len(raw), len(data), h.width * h.height)


def _decode_one(src: Path, dst: Path, options: dict, force: bool) -> Result:
    from . import api
    from .imageio import PNG_COMPRESS_DEFAULT, write_output, format_for, image_bytes
    raw = src.read_bytes()
    options = dict(options)
    png_compress = options.pop("png_compress", PNG_COMPRESS_DEFAULT)
    img = api.decode(raw, **options)
    data = image_bytes(img, format_for(dst), png_compress)
    _check_free(dst, force)
    write_output(dst, data)
    return Result(str(src), str(dst), True, len(raw), len(data), img.width * img.height)


def _check_free(dst: Path, force: bool) -> None:
    from .imageio import would_replace
    if would_replace(dst) and not force:
        raise FileExistsError(f"{dst} exists; use -f to overwrite it")


WORKERS = {"encode": _encode_one, "decode": _decode_one}


def process(kind: str, src: Path, dst: Path, options: dict, force: bool) -> Result:
    """One file; any failure becomes a failed Result with a one-line reason."""
    try:
        return WORKERS[kind](src, dst, options, force)
    except Exception as e:  # noqa: BLE001 - a batch reports every failure and carries on
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return Result(str(src), str(dst), False, error=msg)


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def run(kind: str, pairs: list[tuple[Path, Path]], options: dict, jobs: int = 1, force: bool = False) -> list[Result]:
    """Process every (source, output) pair; results in input order."""
    results: dict[int, Result] = {}
    seen: dict[Path, Path] = {}
    todo = []
    for i, (src, dst) in enumerate(pairs):
        key = dst.resolve()
        if key in seen:  # a.png and a.jpg would both become a.anf
            results[i] = Result(str(src), str(dst), False, error=f"output name collides with {seen[key]}")
        elif src.resolve() == key:
            results[i] = Result(str(src), str(dst), False, error="output would overwrite the input")
        else:
            seen[key] = src
            todo.append(i)
    bar = tqdm(total=len(pairs), desc=kind, unit="file", initial=len(results))
    if jobs == 1 or len(todo) <= 1:
        for i in todo:
            results[i] = process(kind, *pairs[i], options, force)
            bar.update(1)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(process, kind, *pairs[i], options, force): i for i in todo}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    return [results[i] for i in range(len(pairs))]


def summary(kind: str, results: list[Result]) -> str:
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    lines = [f"{kind}d {len(ok)} of {len(results)} files; {len(failed)} failed"]
    if ok:
        size_in, size_out = sum(r.in_bytes for r in ok), sum(r.out_bytes for r in ok)
        anf = size_out if kind == "encode" else size_in
        lines.append(f"  {size_in} bytes in, {size_out} bytes out; mean {8 * anf / sum(r.pixels for r in ok):.4f} bpp")
    lines += [f"  FAILED {r.source}: {r.error}" for r in failed]
    return "\n".join(lines)
