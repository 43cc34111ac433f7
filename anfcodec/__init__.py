"""anfcodec: a learned image codec built on augmented normalizing flows.

The top-level import is light (no torch) so that ``anfcodec info`` and the
container parser work without PyTorch; ``encode``/``decode`` import the model
stack on first use.
"""
__version__ = "0.1.0"


def encode(image, quality: float | None = None, **kwargs) -> bytes:
    """Compress a PIL image, numpy array or path into .anf bytes (quality None: 3, see ``api.encode``)."""
    from .api import encode as _encode
    return _encode(image, quality=quality, **kwargs)


def decode(data: bytes, **kwargs):
    """Decompress .anf bytes into a PIL image."""
    from .api import decode as _decode
    return _decode(data, **kwargs)


__all__ = ["encode", "decode", "__version__"]
