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
    """Decompress .anf bytes into a PIL image (options as ``api.decode``).

    Where torch is not installed, the torch-free decoder (``anfcodec.decoder``) decodes instead:
    the same pixels; ``fast`` then has no effect and ``device`` must be the CPU."""
    if _torch_installed():
        from .api import decode as _decode
        return _decode(data, **kwargs)
    from .decoder.decode import decode as _decode
    if kwargs.pop("device", None) not in (None, "cpu"):
        raise ValueError("decoding on a GPU needs torch")
    kwargs.pop("fast", None)
    return _decode(data, **kwargs)


def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def encode_file(src, dst, force: bool = False, **options):
    """Encode the image file ``src`` into ``dst`` (options as ``encode``) and return its record.

    Never raises: a bad input, an existing ``dst`` (without ``force``) or any other failure
    comes back as a record with ``ok`` False and a one-line ``error``, so a Dask or Ray map over
    many files finishes. The record (``batch.Result``) has ``ok``, ``bytes`` (the file written),
    ``bpp``, ``quality``, ``seconds`` and ``error``. The output is written atomically.
    """
    from .batch import process
    return process("encode", src, dst, options, force)


def decode_file(src, dst, force: bool = False, **options):
    """Decode the .anf file ``src`` into the image ``dst`` (format from its extension); the
    record as ``encode_file``'s, never an exception."""
    from .batch import process
    return process("decode", src, dst, options, force)


__all__ = ["encode", "decode", "encode_file", "decode_file", "__version__"]
