"""The Python API: ``encode(image, quality) -> bytes`` and ``decode(bytes) -> image``.

The path of one image through the codec:
image I/O (imageio) -> model.compress (models/) -> symbols to chunks
(bitstream, range coding in entropy_coding) -> container, and back again for decode.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from PIL import Image

from . import container as fmt
from . import residual
from .bitstream import DecodeError, chunks_to_symbols, symbols_to_chunks
from .decoder.decode import apply_residual as _apply_residual
from .decoder.decode import check_and_split
from .decoder.decode import metadata as _metadata
from .decoder.decode import planes as _planes
from .exact import ExactnessError
from .imageio import (DEFAULT_MAX_PIXELS, encode_plane, join_image, open_image, pad_edge,
                      split_image)
from .metrics import psnr
from .ratecontrol import RateReport, search, top_step
from .timing import phase
from .zoo import default_model_id, find_entry, load_model, quality_range  # noqa: F401 (API)

QUALITY_MIN = 1.0
DEFAULT_QUALITY = 3.0
# The near-lossless layer's lossy base, unless -q says otherwise (or the model's top, if lower). Measured
# with the default model on Kodak 1-3 (bench/near_lossless_base.py): base quality 9 needs 1-3% less rate
# than 8 or 10 at max errors 2-4, and within 0.5% of them at 0-1.
NEAR_LOSSLESS_BASE = 9.0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_quality(quality: float, top: float) -> float:
    """The quality as the container stores it, or ValueError outside [1, top]."""
    q = float(quality)
    if not QUALITY_MIN <= q <= top:
        raise ValueError(f"quality must be between {QUALITY_MIN:g} and {top:g} for this model, got {quality}")
    # The container stores quality in 1/256 steps; use exactly what the decoder will see.
    return fmt.quantize_quality(q) / fmt.QUALITY_SCALE


def encode(image, quality: float | None = None, model_id: str | None = None, device: str | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS, strip: bool = False, refine: float | None = None,
           max_error: int | None = None, tile: int | None = None, progress=None) -> bytes:
    """Compress an image (path, bytes, PIL image or uint8 array) into .anf bytes.

    ``quality`` runs from 1 (smallest file) to the model's highest (``quality_range``);
    None means 3, or with ``max_error`` ``NEAR_LOSSLESS_BASE`` (the model's highest if lower).

    ``strip`` drops the ICC profile and EXIF, which are otherwise carried.
    ``refine`` is the number of encoder refinement steps (see ``ANFIC.refine``, may be
    fractional); each costs about one decode. None picks the model's default for the quality.
    ``max_error`` adds the near-lossless layer: every sample decodes within this many
    levels of the input (0 = lossless); ``quality`` then sets the lossy base layer.
    ``tile`` codes the image as independent tiles of at most this many pixels a side (a
    multiple of 64); None picks by size (see ``tile_size``). ``progress(done, total)`` is
    called after each tile (a 24 MP image takes minutes).
    """
    pic, model = _prepare(image, model_id, device, max_pixels, strip)
    if quality is None:
        quality = min(NEAR_LOSSLESS_BASE, model.num_qualities) if max_error is not None else DEFAULT_QUALITY
    quality = check_quality(quality, model.num_qualities)
    steps = model.default_refine(quality) if refine is None else refine
    h, w = pic.rgb.shape[:2]
    tile_wh = tile_size(w, h, tile)
    # Each tile goes to its chunks (and, for the near-lossless layer, its decoded pixels) before
    # the next starts: the symbols of every tile at once would grow with the image (24 MP: ~0.4 GB).
    streams = []
    lossy = np.empty_like(pic.rgb) if max_error is not None else None
    boxes = fmt.tile_grid(w, h, tile_wh)
    for i, box in enumerate(boxes):
        x = _tensor(pic.rgb, box, model)
        with phase("model"):
            sym = model.compress(x, quality, steps)
        with phase("entropy"):
            streams.append(symbols_to_chunks(model, sym))
        if lossy is not None:
            _decode_tile(model, sym, quality, box, lossy)
        del x, sym
        if progress is not None:
            progress(i + 1, len(boxes))
    extra = []
    if lossy is not None:
        res = residual.encode(_planes(pic.rgb, pic.mode), _planes(lossy, pic.mode), max_error)
        extra.append((fmt.RESIDUAL_CHUNK if res.weights is None else fmt.RESIDUAL_CONTEXT_CHUNK, res.pack()))
    return _pack(pic, model, quality, streams, extra, tile_wh)


def encode_to_target(image, target_bpp: float | None = None, max_bytes: int | None = None,
                     target_psnr: float | None = None, model_id: str | None = None, device: str | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS, strip: bool = False,
                     refine: float | None = None, tile: int | None = None) -> tuple[bytes, RateReport]:
    """Compress at the quality that meets one target: a rate (bpp), a size cap (bytes) or a PSNR (dB).

    Raises ``TargetError`` when ``max_bytes`` cannot be met; other targets that
    cannot be met give the closest point with ``report.met = False`` and a note.
    """
    if sum(t is not None for t in (target_bpp, max_bytes, target_psnr)) != 1:
        raise ValueError("give exactly one of target_bpp, max_bytes, target_psnr")
    pic, model = _prepare(image, model_id, device, max_pixels, strip)
    h, w = pic.rgb.shape[:2]
    tile_wh = tile_size(w, h, tile)
    boxes = fmt.tile_grid(w, h, tile_wh)
    tiles = [_tensor(pic.rgb, box, model) for box in boxes] if len(boxes) == 1 else None
    z2s = [model.analyze(t) for t in tiles] if tiles else [model.analyze(_tensor(pic.rgb, b, model)) for b in boxes]
    trials = {}

    def trial(k: int):
        if k not in trials:
            q = k / fmt.QUALITY_SCALE
            steps = model.default_refine(q) if refine is None else refine
            syms = []
            for i, (box, z2) in enumerate(zip(boxes, z2s)):
                x = tiles[i] if tiles else _tensor(pic.rgb, box, model)
                syms.append(model.quantize(model.refine(x, z2, q, steps) if steps else z2, q, image=x))
            with phase("entropy"):
                streams = [symbols_to_chunks(model, sym) for sym in syms]
            data = _pack(pic, model, q, streams, None, tile_wh)
            p = psnr(pic.rgb, _reconstruct(model, syms, q, pic, tile_wh)) if target_psnr is not None else None
            trials[k] = (data, p)
        return len(trials[k][0]), trials[k][1]

    k, note, met = search(trial, w * h, top_step(model.num_qualities), target_bpp=target_bpp,
                          max_bytes=max_bytes, target_psnr=target_psnr)
    trial(k)  # already cached by the search
    data, p = trials[k]
    report = RateReport(k / fmt.QUALITY_SCALE, len(data), 8 * len(data) / (w * h), p, len(trials), met, note)
    return data, report


# Memory follows the padded pixel count. `make bench-memory` measures the peak RSS of whole-image
# (untiled) coding per size (docs/RESULTS.md, "Speed and memory"): decoding, the larger, stayed under
# 2 GB up to 1.57 MP (1536x1024: 1855 MiB) and exceeded it at 2.0 MP (session 10; session 7's decoder
# crossed it at 1.5 MP). Images up to WHOLE_MAX_PIXELS (padded) are
# coded whole, so tiling, which costs rate at the seams (about 2% for a Kodak image cut in four),
# starts only where coding whole would exceed the bound. Larger images are cut into tiles of at
# most TILE a side, which keeps the decode of 24 MP under 2 GB (`make bench-speed`).
TILE = 640
WHOLE_MAX_PIXELS = 1536 * 1024


def tile_size(width: int, height: int, tile: int | None = None) -> tuple[int, int] | None:
    """(tile width, tile height) for an image, or None when it is coded whole.

    The fewest tiles of at most ``tile`` (default: TILE for images above WHOLE_MAX_PIXELS
    padded pixels) pixels a side, made equal (rounded up to the padding multiple, 64) so that
    no thin strip at the edge is padded to a whole block row.
    """
    if tile is None:
        if _pad64(width) * _pad64(height) <= WHOLE_MAX_PIXELS:
            return None
        tile = TILE
    if tile < 64 or tile % 64:
        raise ValueError(f"tile must be a positive multiple of 64, got {tile}")
    if width <= tile and height <= tile:
        return None

    def side(n: int) -> int:
        return _pad64(-(-n // -(-n // tile)))
    return side(width), side(height)


def _pad64(n: int) -> int:
    return -(-n // 64) * 64


def _prepare(image, model_id, device, max_pixels, strip):
    with phase("io"):
        pic = split_image(open_image(image, max_pixels), keep_metadata=not strip)
    with phase("load"):
        model = load_model(model_id or default_model_id(), device or default_device())
    return pic, model


def _tensor(rgb: np.ndarray, box: tuple[int, int, int, int], model) -> torch.Tensor:
    """One tile of the uint8 image as the model's padded float input."""
    x0, y0, x1, y1 = box
    with phase("io"):
        tile = np.array(rgb[y0:y1, x0:x1])  # a writable copy for torch
        x = torch.from_numpy(tile).permute(2, 0, 1)[None].float().div(255).to(next(model.parameters()).device)
        return pad_edge(x, model.pad_multiple).contiguous(memory_format=torch.channels_last)


def _reconstruct(model, syms: list, quality: float, pic, tile_wh: tuple[int, int] | None) -> np.ndarray:
    """The decoder's 8-bit RGB image from the encoder's per-tile symbols."""
    h, w = pic.rgb.shape[:2]
    out = np.empty((h, w, 3), dtype=np.uint8)
    for box, sym in zip(fmt.tile_grid(w, h, tile_wh), syms, strict=True):
        _decode_tile(model, sym, quality, box, out)
    return out


def _decode_tile(model, sym, quality: float, box: tuple[int, int, int, int], out: np.ndarray) -> None:
    """Write the decoder's 8-bit pixels of one tile's symbols into ``out`` at ``box``."""
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = _to_rgb8(model.decompress(sym, quality), x1 - x0, y1 - y0)


def _pack(pic, model, quality: float, streams: list, extra: list | None, tile_wh: tuple[int, int] | None) -> bytes:
    """The container: header, tile size, each tile's chunks (``streams``), then ``extra`` and metadata."""
    h, w = pic.rgb.shape[:2]
    header = fmt.Header(model.model_id, model.weights_hash, quality, w, h, pic.mode, model.pad_multiple)
    chunks = []
    if tile_wh is not None:
        chunks.append((fmt.TILE_CHUNK, fmt.pack_tile_size(*tile_wh)))
    for tile_chunks in streams:
        chunks += tile_chunks
    chunks += extra or []
    if pic.alpha is not None:
        chunks.append((fmt.ALPHA_CHUNK, encode_plane(pic.alpha)))
    if pic.icc_profile:
        chunks.append((fmt.ICC_CHUNK, zlib.compress(pic.icc_profile, 9)))
    if pic.exif:
        chunks.append((fmt.EXIF_CHUNK, pic.exif))
    with phase("io"):
        return fmt.pack(fmt.Container(header, chunks))


def _to_rgb8(x: torch.Tensor, width: int, height: int) -> np.ndarray:
    rgb = (x[0, :, :height, :width] * 255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(rgb)


def decode(data: bytes, device: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
           fast: bool = False, progress=None) -> Image.Image:
    """Decompress .anf bytes into a PIL image of the original size and mode.

    The default synthesis is fixed point (``ANFIC.decompress``): every machine, thread
    count and device decodes the same pixels. ``fast`` uses the float32 synthesis instead,
    about four times faster, whose pixels may differ by one level between machines; files
    with a near-lossless residual layer always take the exact path, which their bound needs.
    ``progress(done, total)`` is called after each tile.
    """
    with phase("io"):
        c = fmt.unpack(bytes(data))
    hd = c.header
    if hd.width * hd.height > max_pixels:
        raise fmt.FormatError(f"file declares {hd.width}x{hd.height} pixels, above the limit of {max_pixels}")
    find_entry(hd.model_id, hd.weights_hash)   # clear error before any model work
    with phase("load"):
        model = load_model(hd.model_id, device or default_device(), weights_hash=hd.weights_hash)
    alpha, layers = check_and_split(c, model)
    layer = layers[0] if layers else None
    rgb = _synthesize(model, c, hd, model.decompress_float if fast and layer is None else model.decompress,
                      progress)
    if layer is not None:
        try:
            res = residual.Residual.unpack(c.chunk(layer), context=layer == fmt.RESIDUAL_CONTEXT_CHUNK)
        except residual.ResidualError as e:
            raise DecodeError(f"{layer.decode()}: {e}") from None
        if not res.matches(_planes(rgb, hd.mode)):
            # Encoders before the fixed-point synthesis coded the residual against the float32 one.
            legacy = _synthesize(model, c, hd, model.decompress_float)
            if res.matches(_planes(legacy, hd.mode)):
                rgb = legacy
        rgb = _apply_residual(res, rgb, hd.mode)
    with phase("io"):
        return join_image(rgb, hd.mode, alpha, _metadata(c, fmt.ICC_CHUNK), _metadata(c, fmt.EXIF_CHUNK))


def _synthesize(model, c: fmt.Container, hd: fmt.Header, synthesis, progress=None) -> np.ndarray:
    """The lossy 8-bit RGB image: every tile's symbols through ``synthesis``."""
    rgb = np.empty((hd.height, hd.width, 3), dtype=np.uint8)
    # The file's own tiling, whatever today's encoder would choose.
    boxes = c.tiles()
    for i, ((x0, y0, x1, y1), chunks) in enumerate(zip(boxes, c.streams(), strict=True)):
        sym = chunks_to_symbols(model, chunks, x1 - x0, y1 - y0)
        with phase("model"):
            try:
                rgb[y0:y1, x0:x1] = _to_rgb8(synthesis(sym, hd.quality), x1 - x0, y1 - y0)
            except ExactnessError:
                raise DecodeError("LATN: latent values out of range (corrupt stream)") from None
        if progress is not None:
            progress(i + 1, len(boxes))
    return rgb
