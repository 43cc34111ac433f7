"""A model's decoder program: its networks as operations on numpy arrays.

The program is a JSON description written by the model (``ANFIC.decoder_program``) with a few
derived arrays (GDN's reparametrized gamma and beta, the per-quality tables); the convolutions'
weights are read from the shipped weights file itself. ``lower`` turns one network's description
into operations the way ``anfcodec.lowering`` does for the torch decoder: a transposed
convolution becomes its sub-pixel form (``subpixel_kernel``), so both decoders multiply the same
weights in the same layout.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROGRAM_KEY = "program.json"  # the description's key among the arrays of the .npz file
FORMAT = 1


@dataclass
class Conv:
    """float64 weights [C_out, C_in, k, k], bias [C_out] or None; ``pad`` = (before, after) on both
    axes; ``shuffle`` > 1: the sub-pixel form of a transposed convolution."""
    weight: np.ndarray
    bias: np.ndarray | None
    stride: int
    pad: tuple[int, int]
    shuffle: int = 1

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


@dataclass
class GDN:
    gamma: np.ndarray  # [C_out, C_in] float64
    beta: np.ndarray
    inverse: bool


@dataclass
class LeakyReLU:
    slope: float


Op = Conv | GDN | LeakyReLU


def subpixel_kernel(weight: np.ndarray, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """A transposed convolution [C_in, C_out, k, k] as (padding, convolution, pixel shuffle):
    ``(kernel [C_out * stride^2, C_in, taps, taps], pad_before, pad_after)``.

    Output sample ``s*q + r`` sums ``a[q - d] * w[r + padding + s*d]`` over the integers d that
    index the kernel, so each phase r is an ordinary correlation; the stride^2 phases, stacked as
    output channels in pixel-shuffle order, make one dense convolution."""
    c_in, c_out, k, _ = weight.shape
    d_range = {r: range(-((r + padding) // stride), (k - 1 - r - padding) // stride + 1) for r in range(stride)}
    before = max(0, *(max(d) for d in d_range.values() if d))
    after = max(0, *(-min(d) for d in d_range.values() if d))
    taps = before + after + 1
    kernel = np.zeros((c_out, stride, stride, c_in, taps, taps), dtype=weight.dtype)
    for ry in range(stride):
        for rx in range(stride):
            for dy in d_range[ry]:
                for dx in d_range[rx]:
                    kernel[:, ry, rx, :, before - dy, before - dx] = \
                        weight[:, :, ry + padding + stride * dy, rx + padding + stride * dx].T
    return kernel.reshape(c_out * stride * stride, c_in, taps, taps), before, after


def lower(spec: list[dict], arrays) -> list[Op]:
    """One network's description -> operations, weights in float64. ``arrays[key]`` gives the
    arrays the description names (the weights file's tensors and the program's own)."""
    ops: list[Op] = []
    for layer in spec:
        kind = layer["op"]
        if kind == "conv":
            w = np.asarray(arrays[layer["weight"]], dtype=np.float64)
            b = None if layer["bias"] is None else np.asarray(arrays[layer["bias"]], dtype=np.float64)
            k, s, p = w.shape[-1], layer["stride"], layer["padding"]
            if not layer["transposed"]:
                ops.append(Conv(w, b, s, (p, p)))
                continue
            if k - 2 * p + layer["output_padding"] != s:
                raise TypeError("no exact form for a transposed convolution that does not map n to stride * n")
            w, before, after = subpixel_kernel(w, s, p)
            ops.append(Conv(w, None if b is None else np.repeat(b, s * s), 1, (before, after), s))
        elif kind == "gdn":
            gamma = np.asarray(arrays[layer["gamma"]], dtype=np.float64)
            ops.append(GDN(gamma.reshape(gamma.shape[0], -1), np.asarray(arrays[layer["beta"]], dtype=np.float64),
                           bool(layer["inverse"])))
        elif kind == "leaky_relu":
            ops.append(LeakyReLU(float(layer["slope"])))
        else:
            raise ValueError(f"unknown operation {kind!r} in a decoder program")
    return ops


def save(path: Path, program: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write a program and its arrays as one .npz (no pickles: ``load`` reads it with
    ``allow_pickle=False``)."""
    text = json.dumps({**program, "format": FORMAT}, sort_keys=True).encode()
    buf = io.BytesIO()
    np.savez(buf, **{PROGRAM_KEY: np.frombuffer(text, dtype=np.uint8)}, **arrays)
    Path(path).write_bytes(buf.getvalue())


def load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(Path(path), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    program = json.loads(arrays.pop(PROGRAM_KEY).tobytes())
    if program.get("format") != FORMAT:
        raise ValueError(f"decoder program format {program.get('format')}: this decoder reads {FORMAT}")
    return program, arrays
