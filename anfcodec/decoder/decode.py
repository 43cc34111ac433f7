"""An .anf file -> a PIL image, without torch: the container, every tile's latent and synthesis, the
near-lossless residual layer, alpha and metadata, as ``anfcodec.api.decode`` does with the torch
decoder (whose bit-exact pixels these are)."""
from __future__ import annotations

import functools
import warnings
import zlib

import numpy as np
from PIL import Image

from .. import container as fmt
from .. import entropy_coding as ec
from .. import residual
from ..imageio import DEFAULT_MAX_PIXELS, ImageError, decode_plane, join_image
from .model import DecodeError, DecoderModel, NoDecoderProgram
from .nets import ExactnessError

QUALITY_MIN = 1.0


@functools.lru_cache(maxsize=4)
def load_model(model_id: str, weights_hash: bytes | None = None) -> DecoderModel:
    return DecoderModel.load(model_id, weights_hash)


class NoTorchFreeDecode(Exception):
    """What this decoder cannot decode as the torch decoder would (``strict``): a model without a
    decoder program, or a near-lossless layer whose lossy image is not the one it was coded against."""


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, progress=None, strict: bool = False) -> Image.Image:
    """Decompress .anf bytes into a PIL image of the original size and mode, bit-exactly.

    ``strict``: raise ``NoTorchFreeDecode`` instead of decoding what the torch decoder decodes
    otherwise (the caller then has it decode): models without a decoder program, and residual
    layers that old encoders coded against the float32 synthesis, which only it has."""
    c = fmt.unpack(bytes(data))
    hd = c.header
    if hd.width * hd.height > max_pixels:
        raise fmt.FormatError(f"file declares {hd.width}x{hd.height} pixels, above the limit of {max_pixels}")
    try:
        model = load_model(hd.model_id, hd.weights_hash)
    except NoDecoderProgram as e:
        raise NoTorchFreeDecode(str(e)) if strict else e from None
    alpha, layers = check_and_split(c, model)
    rgb = synthesize(model, c, hd, progress)
    if layers:
        try:
            res = residual.Residual.unpack(c.chunk(layers[0]), context=layers[0] == fmt.RESIDUAL_CONTEXT_CHUNK)
        except residual.ResidualError as e:
            raise DecodeError(f"{layers[0].decode()}: {e}") from None
        rgb = apply_residual(res, rgb, hd.mode, strict)
    return join_image(rgb, hd.mode, alpha, metadata(c, fmt.ICC_CHUNK), metadata(c, fmt.EXIF_CHUNK))


def check_and_split(c: fmt.Container, model) -> tuple[np.ndarray | None, list[bytes]]:
    """What both decoders check of a file against its model before decoding it, and what they
    take apart from the lossy image: (the alpha plane or None, the residual layer's chunk types)."""
    hd = c.header
    if hd.pad_multiple != model.pad_multiple:
        raise fmt.FormatError(f"pad multiple {hd.pad_multiple} does not match model {hd.model_id}")
    if hd.mode not in ("RGB", "L", "RGBA", "LA"):
        raise fmt.FormatError(f"unsupported colour mode {hd.mode!r}")
    if not QUALITY_MIN <= hd.quality <= model.num_qualities:
        raise fmt.FormatError(f"quality {hd.quality:g} outside {QUALITY_MIN:g}..{model.num_qualities} of {hd.model_id}")
    alpha = None
    if hd.mode in ("RGBA", "LA"):
        try:
            alpha = decode_plane(c.chunk(fmt.ALPHA_CHUNK), hd.width, hd.height)
        except ImageError as e:
            raise DecodeError(f"ALPH: {e}") from None
    layers = [t for t, _ in c.chunks if t in fmt.RESIDUAL_CHUNKS]
    if len(layers) > 1:
        raise fmt.FormatError("more than one residual layer (RESC/RESI chunk)")
    return alpha, layers


def synthesize(model: DecoderModel, c: fmt.Container, hd: fmt.Header, progress=None) -> np.ndarray:
    """The lossy 8-bit RGB image, tile by tile in the file's own tiling."""
    rgb = np.empty((hd.height, hd.width, 3), dtype=np.uint8)
    boxes = c.tiles()
    for i, ((x0, y0, x1, y1), chunks) in enumerate(zip(boxes, c.streams(), strict=True)):
        y_hat = model.latent(chunks, x1 - x0, y1 - y0)
        try:
            x = model.synthesis(y_hat, hd.quality)
        except ExactnessError:
            raise DecodeError("LATN: latent values out of range (corrupt stream)") from None
        rgb[y0:y1, x0:x1] = to_rgb8(x, x1 - x0, y1 - y0)
        if progress is not None:
            progress(i + 1, len(boxes))
    return rgb


def to_rgb8(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """[1, 3, H, W] float64 in [0, 1] -> [height, width, 3] uint8 (round half to even, as torch)."""
    return np.ascontiguousarray(np.clip(np.rint(x[0, :, :height, :width] * 255), 0, 255).astype(np.uint8)
                                .transpose(1, 2, 0))


def planes(rgb: np.ndarray, mode: str) -> np.ndarray:
    """What the near-lossless layer corrects: the one gray plane of L/LA images, else RGB."""
    if mode in ("L", "LA"):
        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))[..., None]
    return rgb


def apply_residual(res: residual.Residual, rgb: np.ndarray, mode: str, strict: bool = False) -> np.ndarray:
    try:
        out, exact = residual.decode(res, planes(rgb, mode))
    except (residual.ResidualError, ec.EntropyCodingError) as e:
        raise DecodeError(f"residual layer: {e}") from None
    if not exact and strict:
        raise NoTorchFreeDecode("the near-lossless layer was coded against another lossy image")
    if not exact:
        warnings.warn("the lossy layer decoded differently from the encoder's on this machine: "
                      f"a few samples may be off by {res.tau + 1} instead of at most {res.tau}")
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def metadata(c: fmt.Container, ctype: bytes) -> bytes | None:
    """An ancillary metadata chunk's content; a damaged one is dropped (it is ancillary), never fatal."""
    found = [p for t, p in c.chunks if t == ctype]
    if len(found) != 1:
        return None
    if ctype == fmt.ICC_CHUNK:
        try:
            return zlib.decompressobj().decompress(found[0], 1 << 24) or None
        except zlib.error:
            return None
    return found[0] or None
