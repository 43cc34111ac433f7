"""Image I/O: reading inputs of any common mode, padding, writing outputs.

The codec works on 8-bit RGB. What happens to each input mode is decided
here, in one place: RGB is coded as is, grayscale (L) and palette images are
expanded to RGB (grayscale is restored to one channel on decode), 16-bit
grayscale is reduced to 8 bits. Images with transparency are refused rather
than silently losing their alpha channel.
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 1 << 28   # 268 MP; raise with --max-pixels
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """The input is not an image this codec can take."""


def open_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A loaded PIL image from a path, bytes, file object, numpy array or PIL image."""
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = Image.fromarray(source)
    else:
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        try:
            with _PIL_LIMIT_LOCK:  # our max_pixels is the limit that counts, not Pillow's global one
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    img = Image.open(source)   # lazy: reads the header only
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
            if img.width * img.height > max_pixels:
                raise ImageError(f"image is {img.width}x{img.height}, above the limit of {max_pixels} pixels "
                                 "(raise it with --max-pixels)")
            img.load()
        except UnidentifiedImageError:
            raise ImageError("not an image (unrecognised format)") from None
        except (OSError, SyntaxError, ValueError) as e:
            if isinstance(e, ImageError):
                raise
            raise ImageError(f"cannot read image: {e}") from None
    if img.width * img.height > max_pixels:
        raise ImageError(f"image is {img.width}x{img.height}, above the limit of {max_pixels} pixels")
    return ImageOps.exif_transpose(img)  # pixels as the camera meant them to be seen


def to_rgb(img: Image.Image) -> tuple[np.ndarray, str]:
    """(uint8 [H, W, 3], mode to restore on decode)."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        raise ImageError(f"images with transparency ({mode}) are not supported yet; flatten the alpha first")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        warnings.warn(f"{mode} image reduced to 8 bits per sample")
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(np.round(arr * 255.0 / peak), 0, 255).astype(np.uint8), "L")
        mode = "L"
    elif mode == "1":
        img, mode = img.convert("L"), "L"
    if mode == "L":
        return np.asarray(img.convert("RGB")), "L"
    return np.asarray(img.convert("RGB")), "RGB"


def from_rgb(rgb: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(rgb, "RGB")
    return img.convert("L") if mode == "L" else img


def pad_edge(x, multiple: int):
    """Replicate-pad a [1, C, H, W] tensor on the bottom/right to a multiple (cheap to code)."""
    import torch.nn.functional as F
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: never a partial output."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def image_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def format_for(path: Path) -> str:
    ext = Path(path).suffix.lower()
    formats = {".png": "PNG", ".ppm": "PPM", ".pnm": "PPM", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    if ext not in formats:
        raise ImageError(f"unsupported output extension {ext!r}; use a lossless format: {', '.join(sorted(formats))}")
    return formats[ext]
