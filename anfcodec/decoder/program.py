"""A model's decoder program: its networks as operations on numpy arrays.

The program is a JSON description written by the model (``ANFIC.decoder_program``) and the
arrays its operations name. ``lower`` turns one network's description into operations the way
``anfcodec.lowering`` does for the torch decoder: a transposed convolution becomes its sub-pixel
form (``subpixel_kernel``), so both decoders multiply the same weights in the same layout.

A shipped program is compiled (``compiled_arrays``): it carries each weight in the forms the
decoder multiplies, the integers on their grids (int8/int16/int32) and the int8 synthesis's
scales, recorded while the decoder's own networks were built from the float weights at export.
The decoder then needs neither the weights file nor the rounding and re-layout of every weight
at start-up, and a decode-only install needs no ``.pt`` file.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

PROGRAM_KEY = "program.json"  # the description's key among the arrays of the .npz file
FORMAT = 2  # 2: compiled, the weights' decoder forms in the program (1 read the .pt beside it)
FORM_SEPARATOR = "@"  # a weight's decoder form is stored as f"{weight key}@{form}"
OUTLIERS = "#outliers"  # see _int16_with_outliers


class ProgramError(ValueError):
    """A decoder program this decoder cannot run (an old format, or a form it lacks)."""


@dataclass
class Conv:
    """float64 weights [C_out, C_in, k, k] (None in a compiled program), bias [C_out] or None;
    ``pad`` = (before, after) on both axes; ``shuffle`` > 1: the sub-pixel form of a transposed
    convolution; ``key`` and ``store``: where its decoder forms live (``compiled``)."""
    weight: np.ndarray | None
    bias: np.ndarray | None
    stride: int
    pad: tuple[int, int]
    shuffle: int = 1
    key: str = ""
    store: dict | None = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        return self.weight.shape[-1]

    @property
    def channels(self) -> int:
        return self.weight.shape[0] // self.shuffle**2

    def output_scale_groups(self) -> np.ndarray:
        """max |w| per output channel of the layer as trained (its shuffle^2 phases together hold each
        of its weights once); numpy, also for the torch decoder's CPU tensors."""
        per_phase = np.abs(np.asarray(self.weight)).max(axis=(1, 2, 3))
        return per_phase.reshape(self.channels, self.shuffle**2).max(axis=1)

    def compiled(self, form: str, make: Callable[[], np.ndarray], integers: bool = True) -> np.ndarray:
        return _compiled(self, self.weight, form, make, integers)


@dataclass
class GDN:
    gamma: np.ndarray | None  # [C_out, C_in] float64 (None in a compiled program)
    beta: np.ndarray
    inverse: bool
    key: str = ""
    store: dict | None = field(default=None, repr=False, compare=False)

    def compiled(self, form: str, make: Callable[[], np.ndarray], integers: bool = True) -> np.ndarray:
        return _compiled(self, self.gamma, form, make, integers)


@dataclass
class LeakyReLU:
    slope: float


Op = Conv | GDN | LeakyReLU


def _compiled(op: Conv | GDN, weights, form: str, make, integers: bool) -> np.ndarray:
    """One of the decoder's forms of an operation's weights (integers on a grid, int8 scales): read
    from a compiled program, or made from the float weights by ``make()`` and recorded in the
    program's arrays for ``compiled_arrays``. Integers are stored in the narrowest integer type."""
    name = f"{op.key}{FORM_SEPARATOR}{form}"
    if op.store is not None and name in op.store:
        return op.store[name]
    if weights is None:
        raise ProgramError(f"the decoder program has no {name!r} (written for another decoder: make decoder-programs)")
    value = make()
    if op.store is not None:
        op.store[name] = narrowest_integers(value) if integers else value
    return value


def narrowest_integers(v: np.ndarray) -> np.ndarray:
    """Integer-valued float array -> the same integers in the narrowest of int8, int16, int32
    (symmetric range, so that |v| never overflows)."""
    if not np.array_equal(v, np.rint(v)):
        raise ValueError("not integers")
    top = float(np.abs(v).max()) if v.size else 0.0
    for dtype in (np.int8, np.int16, np.int32):
        if top <= np.iinfo(dtype).max:
            return v.astype(dtype)
    raise ValueError("integers beyond int32")


def subpixel_pads(k: int, stride: int, padding: int) -> tuple[dict[int, range], int, int]:
    """The taps d of each phase r of a transposed convolution's sub-pixel form, and its padding."""
    d_range = {r: range(-((r + padding) // stride), (k - 1 - r - padding) // stride + 1) for r in range(stride)}
    before = max(0, *(max(d) for d in d_range.values() if d))
    after = max(0, *(-min(d) for d in d_range.values() if d))
    return d_range, before, after


def subpixel_kernel(weight: np.ndarray, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """A transposed convolution [C_in, C_out, k, k] as (padding, convolution, pixel shuffle):
    ``(kernel [C_out * stride^2, C_in, taps, taps], pad_before, pad_after)``.

    Output sample ``s*q + r`` sums ``a[q - d] * w[r + padding + s*d]`` over the integers d that
    index the kernel, so each phase r is an ordinary correlation; the stride^2 phases, stacked as
    output channels in pixel-shuffle order, make one dense convolution."""
    c_in, c_out, k, _ = weight.shape
    d_range, before, after = subpixel_pads(k, stride, padding)
    taps = before + after + 1
    kernel = np.zeros((c_out, stride, stride, c_in, taps, taps), dtype=weight.dtype)
    for ry in range(stride):
        for rx in range(stride):
            for dy in d_range[ry]:
                for dx in d_range[rx]:
                    kernel[:, ry, rx, :, before - dy, before - dx] = \
                        weight[:, :, ry + padding + stride * dy, rx + padding + stride * dx].T
    return kernel.reshape(c_out * stride * stride, c_in, taps, taps), before, after


def _float64(arrays, key: str | None) -> np.ndarray | None:
    return None if key is None or key not in arrays else np.asarray(arrays[key], dtype=np.float64)


def lower(spec: list[dict], arrays: dict) -> list[Op]:
    """One network's description -> operations, weights in float64. ``arrays[key]`` gives the
    arrays the description names: the float weights (the model's tensors and the program's
    derived ones), or in a compiled program their decoder forms, which the operations read from
    ``arrays`` and, when they make them, record there."""
    ops: list[Op] = []
    for layer in spec:
        kind = layer["op"]
        if kind == "conv":
            w, b = _float64(arrays, layer["weight"]), _float64(arrays, layer["bias"])
            s, p, key = layer["stride"], layer["padding"], layer["weight"]
            if not layer["transposed"]:
                ops.append(Conv(w, b, s, (p, p), key=key, store=arrays))
                continue
            k = s + 2 * p - layer["output_padding"]  # the one kernel size that maps n to stride * n
            if w is not None and w.shape[-1] != k:
                raise TypeError("no exact form for a transposed convolution that does not map n to stride * n")
            if w is None:
                _, before, after = subpixel_pads(k, s, p)
            else:
                w, before, after = subpixel_kernel(w, s, p)
            ops.append(Conv(w, None if b is None else np.repeat(b, s * s), 1, (before, after), s, key=key, store=arrays))
        elif kind == "gdn":
            gamma = _float64(arrays, layer["gamma"])
            ops.append(GDN(None if gamma is None else gamma.reshape(gamma.shape[0], -1),
                           _float64(arrays, layer["beta"]), bool(layer["inverse"]), key=layer["gamma"], store=arrays))
        elif kind == "leaky_relu":
            ops.append(LeakyReLU(float(layer["slope"])))
        else:
            raise ValueError(f"unknown operation {kind!r} in a decoder program")
    return ops


def referenced(spec) -> set[str]:
    """The array keys a program's descriptions name (weights, biases, GDN's gamma and beta)."""
    if isinstance(spec, dict):
        own = {v for k, v in spec.items() if k in ("weight", "bias", "gamma", "beta") and isinstance(v, str)}
        return own.union(*(referenced(v) for v in spec.values() if isinstance(v, (dict, list))))
    if isinstance(spec, list):
        return set().union(*(referenced(v) for v in spec))
    return set()


def compiled_arrays(program: dict, arrays: dict) -> dict[str, np.ndarray]:
    """What a compiled program stores, once the decoder has been built from ``arrays`` (which holds
    the forms it recorded): the tables, the forms, and the named arrays that have none (biases,
    GDN's beta). A weight with forms is not stored as floats."""
    formed = {k.split(FORM_SEPARATOR)[0] for k in arrays if FORM_SEPARATOR in k}
    named = referenced(program) - formed
    return {k: np.asarray(v) for k, v in arrays.items()
            if k.startswith("tables.") or FORM_SEPARATOR in k or k in named}


def _int16_with_outliers(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int32 forms whose values nearly all fit int16, as int16 plus ``key#outliers`` (int32
    [positions; values] of the rest): half the size, and unlike zlib (0.17 s for the default
    model's program) it costs start-up nothing measurable to undo."""
    out = {}
    for k, v in arrays.items():
        big = np.flatnonzero(np.abs(v) > np.iinfo(np.int16).max) if v.dtype == np.int32 else None
        if FORM_SEPARATOR in k and big is not None and 4 * big.size < v.size:
            out[k] = np.where(np.abs(v) > np.iinfo(np.int16).max, 0, v).astype(np.int16)
            out[k + OUTLIERS] = np.stack([big.astype(np.int32), v.flat[big]])
        else:
            out[k] = v
    return out


def save(path: Path, program: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a program and its arrays as one .npz (no pickles: ``load`` reads it with
    ``allow_pickle=False``)."""
    text = json.dumps({**program, "format": FORMAT}, sort_keys=True).encode()
    buf = io.BytesIO()
    np.savez(buf, **{PROGRAM_KEY: np.frombuffer(text, dtype=np.uint8)}, **_int16_with_outliers(arrays))
    Path(path).write_bytes(buf.getvalue())


def load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    program = json.loads(arrays.pop(PROGRAM_KEY).tobytes())
    if program.get("format") != FORMAT:
        raise ProgramError(f"decoder program format {program.get('format')}: this decoder reads {FORMAT} "
                           "(make decoder-programs)")
    for key in [k for k in arrays if k.endswith(OUTLIERS)]:
        positions, values = arrays.pop(key)
        base = key[:-len(OUTLIERS)]
        arrays[base] = arrays[base].astype(np.int32)
        arrays[base].flat[positions] = values
    return program, arrays
