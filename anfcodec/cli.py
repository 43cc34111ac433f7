"""The ``anfcodec`` command line: a thin Click layer over the Python API.

Exit codes: 0 success, 1 bad or corrupt input (one-line message, no
traceback; set ANFCODEC_DEBUG=1 for one), 2 usage error.
"""
from __future__ import annotations

import json
import warnings
import os
import sys
from pathlib import Path

import click

from . import __version__

EXIT_BAD_INPUT = 1


class InputError(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def _fail(e: Exception, source: str | None = None):
    if os.environ.get("ANFCODEC_DEBUG"):
        raise e
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    where = "stdin" if source == "-" else source
    raise InputError(f"{where}: {msg}" if where else msg) from None


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None


def _check_output(inp: str, out: str, force: bool) -> None:
    if out == "-":
        if sys.stdout.isatty() and not force:
            raise click.UsageError("refusing to write binary data to a terminal; redirect stdout or give -f")
        return
    if inp != "-" and Path(inp).resolve() == Path(out).resolve():
        raise click.UsageError("output would overwrite the input; choose another output path")
    from .imageio import would_replace
    if would_replace(out) and not force:
        raise InputError(f"{out} exists; use -f to overwrite it")
    if not Path(out).resolve().parent.is_dir():
        raise InputError(f"output folder {Path(out).parent} does not exist")


def _write_output(out: str, data: bytes) -> None:
    from .imageio import write_output
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_output(Path(out), data)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="anfcodec")
def main():
    """anfcodec: learned image compression with augmented normalizing flows.

    \b
    Typical use:
      anfcodec encode photo.png -o photo.anf --quality 4
      anfcodec decode photo.anf -o photo-decoded.png
      anfcodec info photo.anf

    Quality runs from 1 (smallest files) up to the model's highest fidelity
    (10 for the default model; 'anfcodec models' lists each model's range)
    and may be fractional, e.g. 4.5. Use "-" as a path to read stdin or
    write stdout. An output that is a device or FIFO (-o /dev/null) is
    written into; a symbolic link's target is replaced, the link stays.
    """
    # Warnings (16-bit input reduced, near-lossless bound not reproducible, ...) as one plain line.
    warnings.showwarning = lambda message, *_a, **_k: click.echo(f"warning: {message}", err=True)


def _check_model_and_quality(model_id: str | None, quality: float | None) -> None:
    """Refuse an unknown model, or a quality above its top, before any file is read (the range is per model)."""
    from .zoo import ModelNotFound, quality_range
    try:
        _, top = quality_range(model_id)
    except ModelNotFound as e:
        raise click.BadParameter(str(e), param_hint="--model") from None
    if quality is not None and quality > top:
        raise click.BadParameter(f"{quality:g} is above the highest quality of {model_id or 'the default model'}: "
                                 f"qualities run from 1 to {top:g} (not a 0-100 scale); for a file size give "
                                 "--target-bpp or --max-bytes instead", param_hint="--quality")


def _run_options(f):
    """The options every coding command shares: threads, verbosity."""
    f = click.option("--quiet", is_flag=True, help="Print errors only: no progress, warnings or reports.")(f)
    f = click.option("-v", "--verbose", is_flag=True,
                     help="One line per file on stderr: bytes, bpp, quality, seconds.")(f)
    f = click.option("--threads", type=click.IntRange(1), default=None, metavar="N",
                     help="Threads: torch's intra-op threads, or the torch-free decoder's strips [default: one per "
                          "core; batch workers share the cores].")(f)
    return f


def _one_off_memory() -> None:
    """A one-off command owns its process, so it tunes memory for one pass over one image:

    - glibc keeps freed blocks on its heap for reuse. By default it maps every block above a few MB
      afresh and unmaps it when freed, so each layer's output (100 MB at 768x512) faults its pages
      in anew. The heap is not trimmed until the exit;
    - numpy does not ask for transparent huge pages. A process that touches most of its memory
      once pays more in the kernel for zeroing and compacting 2 MB pages than it wins in TLB
      misses: 0.5 s of a default-model decode (docs/RESULTS.md, session 27).

    The library never does this: it does not own its callers' processes. Where these knobs do
    not exist (no glibc, another numpy), nothing changes."""
    import ctypes

    import numpy as np
    for ns in (getattr(np, "_core", None), getattr(np, "core", None)):
        madvise = getattr(getattr(ns, "multiarray", None), "_set_madvise_hugepage", None)
        if madvise is not None:
            madvise(False)
            break
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4
    mallopt(m_mmap_max, 0)                     # glibc still maps when the heap cannot grow
    mallopt(m_trim_threshold, (1 << 31) - 1)


def _one_off_strip_threads(threads: int | None) -> None:
    """A one-off decode owns its process, so the torch-free decoder runs its convolutions' strips
    on one thread per core with numpy's BLAS at one thread each (``decoder.nets.use_strip_threads``):
    numpy's elementwise steps then run on every core, not only its products (12-13% off a Kodak
    decode, docs/RESULTS.md, session 29). Only before numpy has loaded, which is when BLAS reads
    OPENBLAS_NUM_THREADS, and only where the user has not set that to more than one."""
    if "numpy" in sys.modules:
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if os.environ["OPENBLAS_NUM_THREADS"] == "1":
        from .decoder.nets import use_strip_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        use_strip_threads(threads or cores)


def _setup(threads: int | None, quiet: bool) -> None:
    _one_off_memory()
    if quiet:
        warnings.simplefilter("ignore")
    if threads:
        try:
            import torch
        except ImportError:  # a torch-free decode: its strips' threads are set already
            return
        torch.set_num_threads(threads)


def _default_output(inp: str, suffix: str) -> str:
    """``photo.png`` -> ``photo.anf`` beside it (and back): never a file that exists."""
    if inp == "-":
        raise click.UsageError("reading stdin needs -o OUT ('-' for stdout)")
    out = Path(inp).with_suffix(suffix)
    if out.exists() or out.is_symlink():
        raise InputError(f"{out} exists; give -o OUT (a default output name never replaces a file)")
    return str(out)


def _report(input: str, output: str, raw: bytes, data: bytes, seconds: float, anf: bytes,
            psnr: float | None = None) -> None:
    """The ``-v`` line of a single file."""
    from .batch import Result
    from .container import unpack
    h = unpack(anf).header
    click.echo(Result(input, output, True, len(raw), len(data), h.width * h.height, seconds, h.quality, psnr,
                      anf_bytes=len(anf)).describe(), err=True)


@main.command()
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("-o", "--output", default=None, metavar="OUT", help="The .anf file to write ('-' for stdout).")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Batch mode: write <name>.anf for every input (and every image in an IN folder) here.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Batch mode: parallel worker processes (each gets cores/jobs threads).")
@click.option("-q", "--quality", type=click.FloatRange(min=1), default=None,
              help="1 = smallest file, up to the model's highest fidelity (10 for the default model, "
                   "8 for the others; 'anfcodec models' lists them); fractions allowed.  "
                   "[default: 3; 9 with --max-error, or the model's highest if lower]")
@click.option("--max-error", type=click.IntRange(0, 127), default=None, metavar="N",
              help="Near-lossless: every sample decodes within N levels of the input (adds a residual layer).")
@click.option("--lossless", is_flag=True, help="Same as --max-error 0: the decoded pixels equal the input's.")
@click.option("--refine", type=click.FloatRange(0, 8), default=None, metavar="STEPS",
              help="Encoder refinement steps (fractions scale the last one), each about one decode of time "
                   "[default: 0 at low qualities, ramping to 1 where it pays off in rate-distortion].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where the model runs [default: cuda if available, else cpu].")
@click.option("--model", "model_id", default=None, help="Model id ('anfcodec models' lists them) [default: the shipped default].")
@click.option("--max-pixels", type=click.IntRange(1), default=None, help="Refuse larger inputs [default: 268 MP].")
@click.option("--target-bpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pick the quality whose file is closest to this many bits per pixel.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=None,
              help="Pick the highest quality whose file fits in this many bytes.")
@click.option("--target-psnr", type=float, default=None,
              help="Pick the lowest quality that reaches this PSNR (dB) on the image.")
@click.option("--strip", is_flag=True, help="Drop the ICC profile and EXIF instead of carrying them.")
@click.option("--tile", type=click.IntRange(64), default=None, metavar="PX",
              help="Code as independent tiles of at most PX pixels a side (a multiple of 64); an image that fits "
                   "in one is coded whole [default: whole up to 1.57 MP, above that tiles of at most 640, "
                   "which keeps memory under 2 GB at any size].")
@click.option("--print-psnr", is_flag=True, help="With -v: decode the file again and give its PSNR against the input.")
@click.option("-f", "--force", is_flag=True, help="Overwrite OUT if it exists.")
@_run_options
def encode(inputs, output, out_dir, jobs, quality, max_error, lossless, refine, device, model_id, max_pixels, target_bpp,
           max_bytes, target_psnr, strip, tile, print_psnr, force, threads, verbose, quiet):
    """Compress the image IN (PNG, JPEG, TIFF, ...) into an .anf file.

    Without -o, photo.png is written to photo.anf beside it (never over an
    existing file).

    \b
    Batch mode: several inputs or folders with --out-dir, e.g.
      anfcodec encode photos/ extra.png --out-dir anf/ --jobs 2 -q 4
    A bad file is reported and skipped; the exit code is 1 if any failed.

    Grayscale comes back as grayscale, alpha is kept losslessly, the ICC
    profile and EXIF are carried (unless --strip), EXIF orientation is applied.

    Rate control: --target-bpp, --max-bytes or --target-psnr search the
    continuous quality by bisection (about 11 trials) and report what they
    reached on stderr.

    Near-lossless: --max-error N guarantees every decoded sample is within N
    levels of the input (--lossless: exactly equal), at a higher rate.

    On CPUs with native bfloat16 the encoder's transforms run in it (same
    rate-distortion on Kodak, about twice as fast); ANFCODEC_ENCODER_FP32=1
    keeps them in float32. Either way a file decodes to the same pixels on
    every machine.
    """
    targets = {k: v for k, v in (("target_bpp", target_bpp), ("max_bytes", max_bytes), ("target_psnr", target_psnr))
               if v is not None}
    if len(targets) > 1:
        raise click.UsageError("give at most one of --target-bpp, --max-bytes, --target-psnr")
    if lossless:
        if max_error not in (None, 0):
            raise click.UsageError("--lossless contradicts --max-error")
        max_error = 0
    if targets and (max_error is not None or quality is not None):
        raise click.UsageError("a rate or PSNR target picks the quality itself; drop --quality/--max-error")
    if tile is not None and tile % 64:
        raise click.BadParameter("must be a multiple of 64", param_hint="--tile")
    _check_model_and_quality(model_id, quality)
    from .imageio import DEFAULT_MAX_PIXELS
    common = dict(model_id=model_id, device=device, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, strip=strip,
                  refine=refine, tile=tile)
    if _batch_mode(inputs, output, out_dir):
        options = {**common, "targets": targets} if targets else {**common, "quality": quality, "max_error": max_error}
        _run_batch("encode", inputs, out_dir, ".anf", {**options, "print_psnr": print_psnr and verbose}, jobs, force,
                   threads, verbose, quiet)
        return
    input = inputs[0]
    output = output or _default_output(input, ".anf")
    _check_output(input, output, force)
    _setup(threads, quiet)
    import time

    from . import api
    raw = _read_input(input)
    start = time.perf_counter()
    try:
        if targets:
            data, report = api.encode_to_target(raw, **targets, **common)
            if not quiet:
                click.echo(("reached " if report.met else "warning: target not met, closest is ") + report.describe(),
                           err=True)
        else:
            with _TileBar("encode", quiet) as bar:
                data = api.encode(raw, quality=quality, max_error=max_error, progress=bar, **common)
    except Exception as e:  # bad input must end in one line and exit 1, never a traceback
        _fail(e, input)
    seconds = time.perf_counter() - start
    _write_output(output, data)
    if verbose:
        from .batch import coded_psnr
        _report(input, output, raw, data, seconds, data, coded_psnr(raw, data) if print_psnr else None)


@main.command()
@click.argument("inputs", metavar="IN...", nargs=-1, required=True)
@click.option("-o", "--output", default=None, metavar="OUT",
              help="Image to write; format from the extension (.png, .ppm, .bmp, .tif); '-' writes PNG to stdout.")
@click.option("--out-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Batch mode: write <name>.<format> for every input (and every .anf in an IN folder) here.")
@click.option("--format", "out_format", type=click.Choice(["png", "tif", "bmp", "ppm"]), default="png",
              show_default=True, help="Batch mode: output image format.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Batch mode: parallel worker processes (each gets cores/jobs threads).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where the model runs [default: cuda if available, else cpu].")
@click.option("--max-pixels", type=click.IntRange(1), default=None,
              help="Refuse files that declare more pixels [default: 268 MP].")
@click.option("--fast", is_flag=True,
              help="Float32 synthesis: about 4x faster, but pixels may differ by one level between machines "
                   "[default: fixed point, the same pixels everywhere].")
@click.option("--png-compress", type=click.IntRange(0, 9), default=6, show_default=True, metavar="LEVEL",
              help="PNG zlib level, 0-9 (6: libpng's default). 1 writes a Kodak-size PNG about 3.5x faster than 6 (27 vs ~100 ms) "
                   "for a file 3-10% larger; the pixels are the same.")
@click.option("-t", "--test", is_flag=True,
              help="Decode and check every IN, write nothing; exit 0 if all are sound, 1 if any is not (gzip -t).")
@click.option("-f", "--force", is_flag=True, help="Overwrite OUT if it exists.")
@_run_options
def decode(inputs, output, out_dir, out_format, jobs, device, max_pixels, fast, png_compress, test, force,
           threads, verbose, quiet):
    """Decompress the .anf file IN into an image.

    Without -o, photo.anf is written to photo.png beside it (never over an
    existing file).

    \b
    Batch mode: several inputs or folders with --out-dir, e.g.
      anfcodec decode anf/ --out-dir decoded/ --jobs 2
    Integrity check, nothing written:
      anfcodec decode --test anf/*.anf
    """
    _one_off_strip_threads(threads)  # before anything loads numpy
    from .imageio import DEFAULT_MAX_PIXELS, ImageError, format_for, image_bytes
    options = dict(device=device, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, fast=fast)
    if test:
        if output is not None or out_dir is not None:
            raise click.UsageError("--test writes nothing; drop -o/--out-dir")
        _run_test(inputs, options, jobs, threads, verbose)
        return
    if _batch_mode(inputs, output, out_dir):
        _run_batch("decode", inputs, out_dir, "." + out_format, {**options, "png_compress": png_compress}, jobs,
                   force, threads, verbose, quiet)
        return
    input = inputs[0]
    output = output or _default_output(input, ".png")
    _check_output(input, output, force)
    # --threads must not import torch (seconds) where the torch-free decoder takes the file: it
    # then sets the strips' threads, and torch's, should the file need the torch decoder after all.
    torch_decoder = fast or device not in (None, "cpu")
    _setup(threads if torch_decoder else None, quiet)
    if threads and not torch_decoder:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        fmt_name = "PNG" if output == "-" else format_for(Path(output))
    except ImageError as e:
        raise click.UsageError(str(e)) from None
    import time

    from . import decode as decode_bytes  # the torch decoder, or where torch is absent the numpy one
    raw = _read_input(input)
    start = time.perf_counter()
    try:
        with _TileBar("decode", quiet) as bar:
            img = decode_bytes(raw, **options, progress=bar)
        encoded = image_bytes(img, fmt_name, png_compress)
    except Exception as e:  # hostile input must end in one line and exit 1, never a traceback
        _fail(e, input)
    seconds = time.perf_counter() - start
    _write_output(output, encoded)
    if verbose:
        _report(input, output, raw, encoded, seconds, raw)


def _run_test(inputs: tuple, options: dict, jobs: int, threads: int | None, verbose: bool) -> None:
    """``decode --test``: each file decoded and checked (CRCs, symbol checksums, residual bounds)."""
    from . import batch
    if "-" in inputs:
        raise click.UsageError("--test reads files, not stdin")
    files = batch.expand(list(inputs), batch.ANF_SUFFIXES)
    if not files:
        raise InputError("no input files found")

    def report(r):
        if verbose or not r.ok:
            click.echo(r.describe(), err=True)
    results = batch.run("decode", [(f, None) for f in files], options, jobs, threads=threads, report=report,
                        progress=False)
    if not all(r.ok for r in results):
        sys.exit(EXIT_BAD_INPUT)


class _TileBar:
    """Progress over one image's tiles on stderr (a 24 MP photo takes minutes). Shown only for
    tiled images and on a terminal, so pipes and logs stay clean."""

    def __init__(self, desc: str, quiet: bool = False):
        self.desc, self.bar, self.quiet = desc, None, quiet

    def __call__(self, done: int, total: int) -> None:
        if total < 2 or self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit="tile", disable=None, leave=False)
        self.bar.update(done - self.bar.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _batch_mode(inputs: tuple, output: str | None, out_dir: Path | None) -> bool:
    """One input and -o: a single file. Several inputs, a folder or --out-dir: a batch."""
    batch = out_dir is not None or len(inputs) > 1 or any(i != "-" and Path(i).is_dir() for i in inputs)
    if batch and output is not None:
        raise click.UsageError("-o names one output; use --out-dir DIR for several inputs or a folder")
    if batch and out_dir is None:
        raise click.UsageError("several inputs or a folder need --out-dir DIR")
    if batch and "-" in inputs:
        raise click.UsageError("stdin ('-') is for single files only")
    return batch


def _run_batch(kind: str, inputs: tuple, out_dir: Path, suffix: str, options: dict, jobs: int, force: bool,
               threads: int | None, verbose: bool, quiet: bool) -> None:
    from . import batch
    files = batch.expand(list(inputs), batch.IMAGE_SUFFIXES if kind == "encode" else batch.ANF_SUFFIXES)
    if not files:
        raise InputError("no input files found")
    out_dir.mkdir(parents=True, exist_ok=True)
    if quiet:
        warnings.simplefilter("ignore")
    report = (lambda r: click.echo(r.describe(), err=True)) if verbose else None
    results = batch.run(kind, batch.plan(files, out_dir, suffix), options, jobs, force, threads, report,
                        progress=not quiet)
    if not quiet:
        click.echo(batch.summary(kind, results), err=True)
    elif not all(r.ok for r in results):
        click.echo("\n".join(f"{r.source}: FAILED: {r.error}" for r in results if not r.ok), err=True)
    if not all(r.ok for r in results):
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the manifest entries as JSON.")
def models(as_json):
    """List the installed models (choose one with encode --model ID).

    \b
    Files name the model and weights they were coded with, so decode picks
    the right one by itself; older releases stay installed for their files.
    The default is the best rate-distortion model; the narrower ones code
    faster at some cost in rate (docs/RESULTS.md has both measured).
    """
    from .zoo import manifest
    man = manifest()
    if as_json:
        click.echo(json.dumps(man["models"], indent=1))
        return
    for model_id, e in man["models"].items():
        c, t = e["config"], e.get("training", {})
        default = "  (default)" if model_id == man.get("default") else ""
        click.echo(f"{model_id}{default}")
        click.echo(f"  {c['arch']}, width N={c['N']}, latent M={c['M']}, post-filter {c.get('qe_width', '?')}, "
                   f"{e['parameters'] / 1e6:.1f} M parameters, weights {e['sha256'][:16]}")
        click.echo(f"  qualities 1..{len(c['lambdas'])}")
        if c.get("synthesis", "fixed") != "fixed":
            click.echo(f"  bit-exact decoder: {c['synthesis']} synthesis")
        if t:
            click.echo(f"  trained {t['steps']} steps: {t['cpu_hours']:g} CPU core-hours, "
                       f"{t.get('gpu_hours', 0):g} GPU hours")
    previous = man.get("previous", [])
    if previous:
        click.echo(f"{len(previous)} earlier release(s) kept to decode their files: "
                   + ", ".join(f"{p['id']} {p['sha256'][:8]}" for p in previous))


@main.command()
@click.argument("input", metavar="IN")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--split-map", "split_map", type=click.Path(dir_okay=False), default=None, metavar="OUT.png",
              help="Multiscale files: decode the image and draw its split map over it (coarse regions blue, "
                   "fine orange) into OUT.png. Needs the model; plain info does not.")
@click.option("-f", "--force", is_flag=True, help="Overwrite the --split-map output if it exists.")
def info(input, as_json, split_map, force):
    """Show the header and chunk sizes of an .anf file (does not need PyTorch).

    \b
    For multiscale (ms-anfic) files it also shows the bits and the share of the
    image area coded at each scale, and with --split-map draws the decisions:
      anfcodec info photo.anf --split-map photo-split.png
    """
    from .container import FormatError, describe
    raw = _read_input(input)
    try:
        d = describe(raw)
    except FormatError as e:
        _fail(e, input)
    if split_map is not None:
        _draw_split_map(input, raw, d, split_map, force)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{input}: anfcodec format v{d['format_version']}, {d['file_bytes']} bytes, {d['bpp']:.4f} bpp")
    click.echo(f"  model     {d['model_id']} (weights {d['weights_hash']})")
    click.echo(f"  image     {d['width']}x{d['height']} {d['mode']}, padded to a multiple of {d['pad_multiple']}")
    click.echo(f"  quality   {d['quality']:g}")
    if d["max_error"] is not None:
        click.echo("  fidelity  " + ("lossless" if d["max_error"] == 0 else
                                    f"near-lossless: every sample within {d['max_error']} of the original"))
    if d["tiles"]:
        t = d["tiles"]
        cols = len({b[0] for b in t["boxes"]})
        click.echo(f"  tiles     {t['count']} ({cols}x{t['count'] // cols} grid of {t['size'][0]}x{t['size'][1]}, "
                   "coded independently; HLAT/LATN pairs in raster order)")
    if d["scales"]:
        s, pixels = d["scales"], d["width"] * d["height"]
        click.echo(f"  split     {s['regions']} regions of {s['region']}x{s['region']} px, map {s['split_bytes']} bytes")
        for name, label in (("fine", "fine (1/16)"), ("coarse", "coarse (1/32)")):
            v = s[name]
            click.echo(f"  scale     {label:13} {100 * v['share']:5.1f}% of the area, {v['bytes']} bytes "
                       f"({8 * v['bytes'] / pixels:.4f} bpp)")
    if d["metadata"]:
        click.echo(f"  metadata  {', '.join(d['metadata'])}")
    for ch in d["chunks"]:
        click.echo(f"  chunk     {ch['type']} {ch['bytes']} bytes")


def _draw_split_map(input: str, raw: bytes, d: dict, out: str, force: bool) -> None:
    if not d["scales"]:
        raise InputError(f"{input}: model {d['model_id']} is single-scale; its files have no split map")
    _check_output(input, out, force)
    from . import api, container
    from .imageio import image_bytes
    from .visualize import draw_split_map
    try:
        c = container.unpack(raw)
        picture = draw_split_map(api.decode(raw), container.split_maps(c), c.tiles())
    except Exception as e:  # hostile input must end in one line and exit 1, never a traceback
        _fail(e, input)
    _write_output(out, image_bytes(picture, "PNG"))


@main.command()
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/anfic"), show_default=True,
              help="Checkpoints and logs; an existing run here is resumed.")
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Folder of training photographs [default: ../shared/data/train or $ANFCODEC_DATA/train].")
@click.option("--minutes", type=float, default=60, show_default=True, help="Wall-clock budget of this invocation.")
@click.option("--batch", type=int, default=2, show_default=True)
@click.option("--crop", type=int, default=256, show_default=True,
              help="Crop side; 128 leaves the hyperprior only 2x2 border positions (13% worse rate on Kodak).")
@click.option("--lr", type=float, default=5e-4, show_default=True,
              help="Peak learning rate. 5e-4 suits a young run; the shipped model stalled there after "
                   "11k steps and improved again at 1e-4.")
@click.option("--lr-final", type=float, default=None,
              help="Anneal: cosine decay from --lr to this over the --minutes budget [default: constant lr].")
@click.option("--bf16/--no-bf16", default=True, show_default=True, help="bfloat16 autocast for the transforms, where the hardware computes bfloat16 natively (emulated, a step took 10x longer).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--latent-channels", "M", type=int, default=None,
              help="Latent channels M of a new run [default: the architecture's]; ignored when resuming.")
@click.option("--width", "N", type=click.IntRange(8), default=None,
              help="Hidden width N of a new run; ignored when resuming. With --init, the initial weights' "
                   "flow branches are narrowed to N (a faster model that starts from trained weights).")
@click.option("--qe-width", type=click.IntRange(4), default=None,
              help="Post-filter width of a new run; with --init, the initial post-filter is narrowed to it.")
@click.option("--init", default=None, metavar="WEIGHTS",
              help="Start a new run from these weights, a file or an installed model id (e.g. anfic-n128-m256), "
                   "instead of the DCT warm start.")
@click.option("--lambdas", default=None, metavar="L1,..,L8",
              help="Give the qualities these rate-distortion lambdas; a resumed or --init run is retargeted.")
@click.option("--extend-qualities-from", "extend_from", type=click.IntRange(1), default=None, metavar="K",
              help="Train only the gains and post-filter strengths of the qualities above K (those --lambdas "
                   "added), everything else frozen: qualities 1..K code exactly as before.")
@click.option("--freeze-base", is_flag=True,
              help="Train only the modules a grown model added to its --init weights (MS-ANFIC's coarse "
                   "scale and its conditioning): the base's weights, gains and tables stay exactly as they "
                   "are and no gradient flows into them, so steps are cheaper.")
@click.option("--quantizer", type=click.Choice(["fixed", "mean"]), default=None,
              help="Switch the run's latent quantizer [default: the run's own; 'fixed' for new runs].")
@click.option("--arch", type=click.Choice(["anfic", "anfic-ckbd", "ms-anfic"]), default=None,
              help="Architecture of a new run [default: that of --init, else anfic]. 'ms-anfic' with --init "
                   "ANFIC weights grows them into the multiscale model, which starts out coding like them.")
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of a new run's model config (repeatable; a number or a word), e.g. "
                   "--set coarse_explore=0.25 (MS-ANFIC: at least that share of each crop coded coarse).")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Stop at this cumulative step count (for equal-step comparisons), or at --minutes.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="Torch threads. Use 1 while another job holds a core: two 2-thread jobs on 2 cores "
                   "spin against each other (a step went from 0.5 s to 40 s).")
@click.option("--device", default=None, help="Where to train, e.g. cpu or cuda [default: cuda when present]. "
              "GPU time is logged apart from CPU time in the run's counters and the manifest.")
def train(run_dir, data, minutes, batch, crop, lr, lr_final, bf16, seed, M, N, qe_width, init, lambdas, extend_from,
          freeze_base, quantizer, arch, settings, max_steps, threads, device):
    """Train (or resume training) the model on a folder of photographs."""
    from .models.anfic import ANFICConfig
    from .training.train import TrainOptions, train as run
    if init is not None and not Path(init).is_file():
        from .zoo import WEIGHTS_DIR, ModelNotFound, find_entry
        try:
            init = WEIGHTS_DIR / find_entry(init)["file"]
        except ModelNotFound as e:
            raise click.BadParameter(f"{init} is neither a weights file nor an installed model ({e})",
                                     param_hint="--init") from None
    init = Path(init) if init is not None else None
    config = ANFICConfig()
    config.M, config.N, config.qe_width = M or config.M, N or config.N, qe_width or config.qe_width
    widths = {k: v for k, v in (("N", N), ("qe_width", qe_width)) if v is not None}
    opts = TrainOptions(run_dir=run_dir, minutes=minutes, batch=batch, crop=crop, lr=lr, lr_final=lr_final, bf16=bf16, seed=seed,
                        config=config.to_dict(), init=init, quantizer=quantizer, threads=threads,
                        arch=arch, max_steps=max_steps, device=device, extend_from=extend_from,
                        freeze_base=freeze_base,
                        widths=widths if init is not None else None)
    if lambdas is not None:
        try:
            opts.lambdas = tuple(float(v) for v in lambdas.split(","))
        except ValueError:
            raise click.BadParameter(f"not a comma-separated list of numbers: {lambdas!r}", param_hint="--lambdas")
        if any(b <= a for a, b in zip(opts.lambdas, opts.lambdas[1:])) or min(opts.lambdas) <= 0:
            raise click.BadParameter("lambdas must be positive and increasing", param_hint="--lambdas")
    if settings:
        opts.settings = dict(_setting(s) for s in settings)
    if data is not None:
        opts.data = data
    best = run(opts)
    click.echo(f"best checkpoint: {best}")


def _setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` -> (field, int, float, bool (true/false) or the word itself)."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise click.BadParameter(f"not FIELD=VALUE: {text!r}", param_hint="--set")
    if value.lower() in ("true", "false"):  # a bare word would be truthy either way
        return field, value.lower() == "true"
    for kind in (int, float):
        try:
            return field, kind(value)
        except ValueError:
            pass
    return field, value


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/bench"), show_default=True,
              help="Where bench.json, bench.md and rd.png go.")
@click.option("--qualities", default=None, help="Comma-separated anfcodec qualities [default: every integer "
              "quality of the model, 1..8 or 1..10].")
@click.option("--classical/--no-classical", default=True, show_default=True,
              help="Also run JPEG, WebP, AVIF (Pillow) and JPEG XL (cjxl, if installed).")
@click.option("--reuse-classical", is_flag=True, help="Take the classical curves from the previous OUT/bench.json.")
@click.option("--classical-from", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Take the classical curves from this JSON (anchors format) instead of running the codecs.")
@click.option("--anchors", type=click.Path(path_type=Path), default=Path("../shared/anchors/kodak_measured.json"),
              show_default=True, help="Published/measured curves to cross-check against (skipped if absent).")
@click.option("--generations", type=click.IntRange(0), default=0, metavar="N",
              help="Instead of RD curves: re-encode N times at each quality, against JPEG and WebP at matched rates.")
@click.option("--high-rate", is_flag=True,
              help="Instead of RD curves: near-lossless and lossless against JPEG XL, AVIF, WebP and PNG.")
@click.option("--speed", is_flag=True,
              help="Instead of RD curves: time and peak memory from 768x512 to 24 MP, against mbt2018-mean.")
@click.option("--memory", is_flag=True,
              help="Instead of RD curves: peak memory of whole-image (untiled) coding from 0.4 to 2.7 MP, and the "
                   "size where it crosses 2 GB (OUT/memory.*), which sets where tiling starts.")
@click.option("--tiling", type=click.IntRange(64), default=None, metavar="PX",
              help="Instead of RD curves: coding as tiles of at most PX pixels a side against whole-image coding, "
                   "at the first quality, as extra rate at equal PSNR (OUT/tiling.*).")
@click.option("--floor", "floor_", is_flag=True,
              help="Instead of RD curves: the work (multiply-accumulates) per network of coding a 768x512 image, "
                   "against mbt2018-mean, and the least time it could take at this machine's best matrix-product "
                   "speed (OUT/floor.*).")
@click.option("--max-mp", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MP",
              help="With --speed: skip image sizes above MP megapixels (a quick run).")
@click.option("--settle", type=click.FloatRange(min=0), default=20.0, show_default=True, metavar="SECONDS",
              help="With --speed: before timing, each worker repeats the same kind of work for this long, so "
                   "that every size is timed at the CPUs' sustained clock (they run faster for the first seconds "
                   "after an idle phase). 0 times a cold start.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first LIMIT images.")
@click.option("--model", "model_id", default=None,
              help="anfcodec model id to measure (RD curves, --generations, --speed, --floor) "
                   "[default: the shipped default].")
@click.option("--compare", multiple=True, metavar="LABEL=BENCH.json",
              help="Also show an earlier run's anfcodec curve and the BD-rate against it, overall and per image "
                   "(e.g. an ablation's other arm). Repeatable.")
def bench(folder, out, qualities, classical, reuse_classical, classical_from, anchors, generations, high_rate, speed,
          memory, tiling, floor_, max_mp, settle, limit, model_id, compare):
    """Measure RD curves, BD-rates and timings on a folder of PNG images.

    \b
    With --generations N it measures re-encoding instead: decode and re-encode
    N times, PSNR against the original after each generation, written to
    OUT/generations.json and OUT/generations.md. With --high-rate it measures
    the near-lossless end against JPEG XL, AVIF, WebP and PNG (OUT/highrate.*);
    with --speed, time and memory per image size (OUT/speed.*, at the first quality);
    with --memory, the peak memory of whole-image coding per size (OUT/memory.*);
    with --tiling PX, the cost of coding as tiles (OUT/tiling.*, at the first quality);
    with --floor, the work of coding and the least time it could take (OUT/floor.*).
    """
    if qualities is None:
        from .zoo import quality_range
        qs = [float(q) for q in range(1, int(quality_range(model_id)[1]) + 1)]
    else:
        qs = [float(q) for q in qualities.split(",") if q.strip()]
    if tiling is not None and tiling % 64:
        raise click.BadParameter("must be a multiple of 64", param_hint="--tiling")
    if generations or high_rate or speed or memory or tiling or floor_:
        from .benchmarks import floor, generations as gen, highrate, memorybound, speed as speed_bench, tilecost
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[:limit]
        if not images:
            raise click.ClickException(f"no PNG images in {folder}")
        if generations:
            module, name, result = gen, "generations", gen.run(images, qs, generations, model_id=model_id)
        elif high_rate:
            module, name, result = highrate, "highrate", highrate.run(images)
        elif tiling:
            module, name, result = tilecost, "tiling", tilecost.run(images, qs[0], tiling)
        elif memory:
            module, name, result = memorybound, "memory", memorybound.run(images, qs[0])
        elif floor_:
            module, name, result = floor, "floor", floor.run(images, qs[0], model_id=model_id)
        else:
            sizes = [s for s in speed_bench.SIZES if max_mp is None or s[1] * s[2] <= max_mp * 1e6]
            module, name, result = speed_bench, "speed", speed_bench.run(images, qs[0], sizes=sizes,
                                                                         model_id=model_id, settle_s=settle)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out / f"{name}.md").write_text(module.markdown(result))
        click.echo(module.markdown(result))
        click.echo(f"wrote {out}/{name}.json, {name}.md")
        return
    from .benchmarks.rd import markdown, run
    others = {}
    for item in compare:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise click.BadParameter(f"expected LABEL=path/to/bench.json, got {item!r}", param_hint="--compare")
        others[label] = Path(path)
    result = run(folder, out, qs, classical=classical, anchors=anchors, reuse_classical=reuse_classical,
                 classical_from=classical_from, limit=limit, model_id=model_id, compare=others)
    click.echo(markdown(result))
    click.echo(f"wrote {out}/bench.json, bench.md, rd.png")


@main.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=False)
@click.option("--from-model", default=None, metavar="ID",
              help="Instead of a checkpoint, an installed model's current weights (e.g. to ship them with "
                   "--synthesis int8 under a new --model-id).")
@click.option("--model-id", default=None, help="[default: anfic-n<N>-m<M> from the checkpoint's config]")
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None, help="[default: the package's weights/]")
@click.option("--default/--no-default", "make_default", default=True, show_default=True,
              help="Make this model the one encode uses without --model.")
@click.option("--synthesis", type=click.Choice(["fixed", "int8"]), default=None,
              help="The bit-exact decoder's arithmetic [default: the checkpoint's]. 'int8' keeps 8-bit "
                   "activations from layer to layer (twice as fast; scales measured on --data).")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Photographs to measure the int8 scales on [default: ../shared/data/train or $ANFCODEC_DATA/train].")
def export_cmd(checkpoint, from_model, model_id, weights_dir, make_default, synthesis, data):
    """Ship a training checkpoint as weights/<model-id>.pt and update the manifest.

    \b
    anfcodec export runs/anfic/best.pt
    anfcodec export --from-model anfic-ckbd-n64-m256 --synthesis int8 --model-id anfic-ckbd-n64-m256-int8 --no-default
    """
    from .training.data import DEFAULT_TRAIN_DIR
    from .training.export import default_model_id, export, release_checkpoint
    from .zoo import WEIGHTS_DIR
    if (checkpoint is None) == (from_model is None):
        raise click.UsageError("give a CHECKPOINT or --from-model ID (one of them)")
    if from_model:
        if not model_id:
            raise click.UsageError("--from-model needs --model-id: the installed model keeps its own")
        checkpoint = release_checkpoint(from_model)
    model_id = model_id or default_model_id(checkpoint)
    entry = export(checkpoint, weights_dir or WEIGHTS_DIR, model_id, make_default=make_default,
                   synthesis=synthesis, calibration_dir=data or DEFAULT_TRAIN_DIR)
    click.echo(f"exported {model_id}: sha256 {entry['sha256'][:16]}, {entry['training']['steps']} steps")


if __name__ == "__main__":
    main()
