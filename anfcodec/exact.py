"""Integer-exact evaluation of the networks whose output must match on every machine.

The decoder must rebuild exactly the scale indices the encoder used, and every
decoder must produce the same pixels, on any thread count, CPU instruction set
or GPU. Floating-point convolutions do not promise that: their summation order
varies. Here weights and activations are held as integers (fixed point) and
each convolution multiplies those integers exactly (``lowering``: the operations and the
strip loop shared with ``int8net``; ``arith``: int8 digits, float32 digit planes or float64,
whichever is fastest here), so the result is the same whatever the order of summation and
whichever arithmetic ran. Between layers only elementwise IEEE operations (multiply by
a power of two, round, multiply, divide, square root) are used, which are
correctly rounded and so deterministic everywhere (the square root through ``arith.sqrt_``:
torch's own CPU sqrt is not correctly rounded).

Two precisions are in use: the entropy-parameter network (``ACT_BITS`` /
``WEIGHT_BITS``, frozen: changing them changes the symbols of existing files)
and the synthesis path (``SYNTH_ACT_BITS`` / ``SYNTH_WEIGHT_BITS``, finer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .lowering import GDN, Conv, LeakyReLU, Product, abs_max, conv_strips, lower

# The grids (entropy parameters 2^-10 / 2^-14, synthesis 2^-14 / 2^-16) and the error are the
# format's, defined once with the torch-free decoder.
from .decoder.nets import ACT_BITS, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS, WEIGHT_BITS, ExactnessError  # noqa: E402,F401
from .decoder.nets import EXACT_LIMIT as _EXACT_LIMIT  # noqa: E402

BAND_BYTES = 8 << 20  # widest activation of one band when a size-keeping network runs band by band
GDN_BAND_BYTES = 4 << 20  # rows of one GDN pass: x^2 and the norm of a band stay in cache


def to_grid(x: torch.Tensor, bits: int = ACT_BITS) -> torch.Tensor:
    """Integer-valued float64 tensor round(x * 2^bits)."""
    return torch.round(x.double() * 2.0**bits)


def _check(a: torch.Tensor, fan: float, bias_max: float) -> float:
    """Refuse a convolution whose worst-case partial sum could leave exact float64 integers; max |a|."""
    a_max = abs_max(a)
    if a_max * fan + bias_max >= _EXACT_LIMIT:
        raise ExactnessError("fixed-point convolution would exceed 2^52")
    return a_max


class ExactSequential:
    """Fixed-point copy of a Sequential of Conv2d / ConvTranspose2d / LeakyReLU / GDN / IGDN layers.

    Activations are integers on the 2^-act_bits grid, weights on the 2^-weight_bits
    grid; every layer returns activations on the input's grid.
    """

    def __init__(self, seq: nn.Module, act_bits: int = ACT_BITS, weight_bits: int = WEIGHT_BITS):
        self.act_bits, self.weight_bits = act_bits, weight_bits
        self.layers = []  # (op, its Product or None, fan)
        for op in lower(seq):
            if isinstance(op, Conv):
                w = torch.round(op.weight * 2.0**weight_bits)
                b = None if op.bias is None else torch.round(op.bias * 2.0 ** (weight_bits + act_bits))
                product = Product(w, b, op.stride, "fixed-point")
            elif isinstance(op, GDN):
                c = op.beta.numel()
                product = Product(torch.round(op.gamma * 2.0**weight_bits).reshape(c, c, 1, 1),
                                  torch.round(op.beta * 2.0 ** (weight_bits + act_bits)), 1, "fixed-point")
            else:
                product = None
            self.layers.append((op, product, 0.0 if product is None else product.fan()))
        self.halo = self._halo()  # rows of context a band needs; None: the network runs in one pass
        self.conv_width = max([0] + [p.c_out for op, p, _ in self.layers if isinstance(op, Conv)])

    def _halo(self) -> int | None:
        """Rows of context each side that the output needs, when every layer keeps the size (stride-1
        convolutions padded to 'same', pointwise layers); None otherwise."""
        halo = 0
        for op, _, _ in self.layers:
            if isinstance(op, Conv):
                if op.stride != 1 or op.shuffle != 1 or op.pad[0] != op.pad[1] or 2 * op.pad[0] != op.k - 1:
                    return None
                halo += op.pad[0]
        return halo

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """``a``: integer-valued float64 NCHW activations on the 2^-act_bits grid; returns the same
        kind (channels_last).

        A size-keeping network (the post-filter) runs band by band, each band with the rows of
        context its output needs, so that its full-size activations stay in cache from one layer
        to the next. Zero padding at a band's inner edge only disturbs rows within the context,
        which are cropped: the result is the whole-image one.
        """
        x = a.permute(0, 2, 3, 1)
        x, owned = (x, False) if x.is_contiguous() else (x.contiguous(), True)
        halo = self.halo
        width = max(x.shape[-1], self.conv_width)
        rows = max(4 * (halo or 0), BAND_BYTES // (8 * x.shape[0] * width * max(x.shape[2], 1)))
        h = x.shape[1]
        if halo is None or h <= rows:
            return self._layers(x, owned).permute(0, 3, 1, 2)
        out = None
        for r0 in range(0, h, rows):
            r1 = min(r0 + rows, h)
            lo, hi = max(r0 - halo, 0), min(r1 + halo, h)
            band = self._layers(x[:, lo:hi], False)[:, r0 - lo:r1 - lo]
            if out is None:
                out = torch.empty(x.shape[0], h, x.shape[2], band.shape[-1], dtype=x.dtype, device=x.device)
            out[:, r0:r1] = band
        return out.permute(0, 3, 1, 2)

    def _layers(self, a: torch.Tensor, owned: bool) -> torch.Tensor:
        """NHWC in and out; ``owned``: ``a`` may be modified in place (never the caller's tensor)."""
        W = self.weight_bits
        for op, product, fan in self.layers:
            if isinstance(op, LeakyReLU):  # in place: x * slope for x < 0 is one correctly rounded product
                if not owned:
                    a, owned = a.clone(), True
                F.leaky_relu(a, op.slope, inplace=True).round_()
                continue
            product.to(a.device)
            if isinstance(op, GDN):
                a = self._gdn(a, op, product, fan, owned)
            else:
                a = conv_strips(a, product, op.pad, _check(a, fan, product.bias_max), op.shuffle,
                                columns=lambda v: v.mul_(2.0**-W).round_())
            owned = True  # a fresh tensor: later layers may work on it in place
        return a

    def _gdn(self, a: torch.Tensor, op: GDN, product: Product, fan: float, owned: bool) -> torch.Tensor:
        """norm = beta + gamma * x^2, with x^2 requantized to the activation grid first. The 1x1
        product has no spatial reach, so it runs in bands of rows, in place: one full-size
        activation alive instead of three (x, x^2 and the norm)."""
        A, W = self.act_bits, self.weight_bits
        a_max = abs_max(a)
        if a_max >= 2.0**26:
            raise ExactnessError("fixed-point GDN input would exceed 2^26")
        sq_max = round(a_max * a_max * 2.0**-A)  # = max of x^2 below
        if sq_max * fan + product.bias_max >= _EXACT_LIMIT:
            raise ExactnessError("fixed-point convolution would exceed 2^52")
        if not owned:
            a = a.clone()
        rows = max(1, GDN_BAND_BYTES // (8 * a.shape[0] * a.shape[-1] * max(a.shape[2], 1)))
        be = None  # chosen once, on the first band
        for r0 in range(0, a.shape[1], rows):
            band = a[:, r0:r0 + rows]
            sq = (band * band).mul_(2.0**-A).round_()
            be = be or product.backend(sq, sq_max)
            norm = arith.sqrt_(product(sq, sq_max, be).mul_(2.0 ** -(A + W)))
            (band.mul_(norm) if op.inverse else band.div_(norm)).round_()
        return a
