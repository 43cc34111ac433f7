"""Read the shipped weights files (PyTorch's zip checkpoint format) as numpy arrays, without torch.

A ``.pt`` file written by ``torch.save`` is a zip archive: ``<root>/data.pkl`` pickles the state
dict, each tensor as a call to ``torch._utils._rebuild_tensor_v2`` on a storage that the pickle
names by key; the storage's bytes are ``<root>/data/<key>``, little-endian (``<root>/byteorder``).
This module reads that layout with a restricted unpickler: it admits only the few globals a
state dict of plain tensors uses, so it never runs code from the file. The torch-free decoder
loads the same hash-checked files as the torch path, and old releases stay readable.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

# The storage types a state dict may use, by the name torch pickles them under.
_STORAGES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
             "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
             "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class WeightsFormatError(ValueError):
    """The file is not a state dict of plain tensors in PyTorch's zip format."""


class _Storage:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, shape: tuple, stride: tuple, *_ignored) -> np.ndarray:
    """A tensor view of a storage: ``shape`` and element ``stride`` from element ``offset`` (a copy,
    so that the result is contiguous and independent of the archive's buffer)."""
    item = storage.itemsize
    need = offset + sum((n - 1) * s for n, s in zip(shape, stride)) + 1 if all(shape) else 0
    if need > storage.size:
        raise WeightsFormatError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(shape),
                                           strides=tuple(s * item for s in stride))
    return np.array(view, copy=True)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _Storage(_STORAGES[name])
        raise WeightsFormatError(f"weights file refers to {module}.{name}: not a plain state dict")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise WeightsFormatError(f"unexpected persistent id {pid!r:.80}")
        _, kind, key, _location, numel = pid
        raw = self.archive.read(f"{self.root}/data/{key}")
        if len(raw) < numel * kind.dtype.itemsize:
            raise WeightsFormatError(f"storage {key} is shorter than its {numel} elements")
        return np.frombuffer(raw, dtype=kind.dtype.newbyteorder("<"), count=numel)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict in ``path`` as numpy arrays (dtypes as stored)."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise WeightsFormatError(f"{path}: no single data.pkl in the archive")
            root = pickles[0][:-len("/data.pkl")]
            order = f"{root}/byteorder"
            if order in archive.namelist() and archive.read(order).strip() != b"little":
                raise WeightsFormatError(f"{path}: big-endian weights are not supported")
            state = _Unpickler(archive.read(pickles[0]), archive, root).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as e:
        raise WeightsFormatError(f"{path}: not a PyTorch zip checkpoint ({e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise WeightsFormatError(f"{path}: not a state dict of tensors")
    return dict(state)
