"""The bit-exact synthesis over numpy: latent -> image, as ``ANFIC.synthesize_exact`` defines it.

The inverse flow's sums and the post-filter's strength run on the integer grid; the networks run
in the model's arithmetic (``nets.ExactNet`` for the fine fixed point, ``nets.Int8Net`` for the
int8 synthesis), their weights lowered from the decoder program.
"""
from __future__ import annotations

import math

import numpy as np

from . import program as prog
from .nets import SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS, ExactNet, Int8Net, scaled_count

GAIN_BITS = 24  # per-quality scalars (1/gain, post-filter strength) on a 2^-24 grid


def fixed_point_table(table: np.ndarray, quality: float, bits: int, exp_neg: bool = False) -> list[float]:
    """Row interpolation of ``table`` [qualities, n] at ``quality`` (optionally exp(-value)), on the
    2^-bits grid, as integers. Scalar Python float64 arithmetic: no vectorized kernel whose rounding
    could vary by CPU (``ANFIC._fixed_point_table`` is this function)."""
    n = table.shape[0]
    pos = min(max(float(quality) - 1, 0.0), n - 1.0)
    lo = min(math.floor(pos), n - 2)
    frac = pos - lo
    a, b = np.asarray(table[lo], dtype=np.float64).tolist(), np.asarray(table[lo + 1], dtype=np.float64).tolist()
    values = [u * (1 - frac) + v * frac for u, v in zip(a, b)]
    return [float(round((math.exp(-v) if exp_neg else v) * 2.0**bits)) for v in values]


class Synthesis:
    """The decoder's networks from a program (``program.load``) and the weights' arrays."""

    def __init__(self, program: dict, arrays):
        order = program["synthesis_order"]
        ops = {name: prog.lower(program["synthesis_networks"][name], arrays) for name in order}
        if program["synthesis"] == "int8":
            scales = np.asarray(arrays["tables.int8_scales"], dtype=np.float64).tolist()
            self.nets, at = {}, 0
            for name in order:
                n = scaled_count(ops[name])
                self.nets[name] = Int8Net(name, ops[name], scales[at:at + n])
                at += n
        else:
            self.nets = {name: ExactNet(ops[name], SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS) for name in order}
        self.log_gain = np.asarray(arrays["tables.log_gain"], dtype=np.float64)
        self.strength = np.asarray(arrays["tables.post_strength"], dtype=np.float64)

    def __call__(self, y_hat: np.ndarray, quality: float) -> np.ndarray:
        """Dequantized latent [1, M, h, w] (float64, on a dyadic grid no finer than 2^-14) -> image
        [1, 3, H, W] in [0, 1], float64."""
        net, A = self.nets, SYNTH_ACT_BITS
        inv_gain = np.array(fixed_point_table(self.log_gain, quality, GAIN_BITS, exp_neg=True)).reshape(1, -1, 1, 1)
        z2 = np.rint(y_hat * inv_gain * 2.0 ** (A - GAIN_BITS))
        x1 = net["g_s2"](z2)
        z1 = z2 - net["g_a2"](x1)
        x = x1 + net["g_s1_linear"](z1) + net["g_s1_branch"](z1)
        strength = fixed_point_table(self.strength[:, None], quality, GAIN_BITS)[0]
        x = x + np.rint(net["post"](x) * strength * 2.0**-GAIN_BITS)
        return np.clip(x * 2.0**-A + 0.5, 0, 1)
