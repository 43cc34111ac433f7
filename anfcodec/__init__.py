"""anfcodec: a learned image codec built on augmented normalizing flows.

The top-level import is light (no torch) so that ``anfcodec info`` and the
container parser work without PyTorch; ``encode``/``decode`` import the model
stack on first use.
"""
import importlib.util
import sys

__version__ = "0.1.0"


def encode(image, quality: float | None = None, **kwargs) -> bytes:
    """Compress a PIL image, numpy array or path into .anf bytes (quality None: 3, see ``api.encode``)."""
    from .api import encode as _encode
    return _encode(image, quality=quality, **kwargs)


def decode(data: bytes, **kwargs):
    """Decompress .anf bytes into a PIL image (options as ``api.decode``).

    The torch-free decoder (``anfcodec.decoder``) decodes whenever it applies: a bit-exact decode
    on the CPU (not ``fast``, no GPU ``device``) of a model with a decoder program, in a process
    that has not imported torch. Both decoders give the same pixels; importing torch costs a
    one-off decode 1-4 s, while in a process that already holds it the torch decoder is faster.
    Otherwise, and where torch is installed for what the torch-free one cannot decode (MS-ANFIC,
    or a near-lossless layer coded against an old encoder's float synthesis), the torch decoder.
    Without torch, ``fast`` has no effect and ``device`` must be the CPU."""
    installed = _torch_installed()
    if not installed and kwargs.get("device") not in (None, "cpu"):
        raise ValueError("decoding on a GPU needs torch")
    wants_torch = kwargs.get("fast") or kwargs.get("device") not in (None, "cpu") or _torch_imported()
    if not installed or not wants_torch:
        from .decoder.decode import NoTorchFreeDecode, decode as torch_free_decode
        options = {k: v for k, v in kwargs.items() if k in ("max_pixels", "progress")}
        try:
            return torch_free_decode(data, strict=installed, **options)
        except NoTorchFreeDecode:
            if not installed:
                raise
    from .api import decode as _decode
    return _decode(data, **kwargs)


def _torch_imported() -> bool:
    return sys.modules.get("torch") is not None


def _torch_installed() -> bool:
    """Whether torch can be imported, without importing it (which costs seconds); a process that
    blocks it (``sys.modules["torch"] = None``) has none."""
    if "torch" in sys.modules:
        return _torch_imported()
    return importlib.util.find_spec("torch") is not None


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
