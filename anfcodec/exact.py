"""Integer-exact evaluation of the entropy-parameter network.

The decoder must rebuild exactly the scale indices the encoder used, on any
thread count, CPU instruction set or GPU. Floating-point convolutions do not
promise that: their summation order varies. Here weights and activations are
held as integers (fixed point) and each convolution runs in float64 on those
integers: every product and partial sum is an exact integer below 2^53, so the
result is the same whatever the order of summation. Between layers only
elementwise IEEE operations (multiply by a power of two, round, one multiply
for the leaky slope) are used, which are deterministic everywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACT_BITS = 10       # activations on a 2^-10 grid
WEIGHT_BITS = 14    # weights on a 2^-14 grid
_EXACT_LIMIT = 2.0**52


class ExactnessError(ArithmeticError):
    """An intermediate value left the range where float64 integer arithmetic is exact."""


def to_grid(x: torch.Tensor, bits: int = ACT_BITS) -> torch.Tensor:
    """Integer-valued float64 tensor round(x * 2^bits)."""
    return torch.round(x.double() * 2.0**bits)


class ExactSequential:
    """Fixed-point copy of a Sequential of Conv2d / ConvTranspose2d / LeakyReLU layers."""

    def __init__(self, seq: nn.Sequential):
        self.layers = []
        for layer in seq:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                w = torch.round(layer.weight.detach().double() * 2.0**WEIGHT_BITS)
                b = torch.round(layer.bias.detach().double() * 2.0 ** (WEIGHT_BITS + ACT_BITS))
                self.layers.append(("convT" if isinstance(layer, nn.ConvTranspose2d) else "conv", w, b, layer))
            elif isinstance(layer, nn.LeakyReLU):
                self.layers.append(("leaky", layer.negative_slope, None, layer))
            else:
                raise TypeError(f"no exact form for {type(layer).__name__}")

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """``a``: integer-valued float64 activations on the 2^-ACT_BITS grid; returns the same kind."""
        for kind, w, b, layer in self.layers:
            if kind == "leaky":
                a = torch.where(a < 0, torch.round(a * w), a)
                continue
            w, b = w.to(a.device), b.to(a.device)
            bound = a.abs().max() * w.abs().sum(dim=(1, 2, 3) if kind == "conv" else (0, 2, 3)).max() + b.abs().max()
            if bound >= _EXACT_LIMIT:
                raise ExactnessError("fixed-point convolution would exceed 2^52")
            if kind == "conv":
                r = F.conv2d(a, w, b, stride=layer.stride, padding=layer.padding)
            else:
                r = F.conv_transpose2d(a, w, b, stride=layer.stride, padding=layer.padding,
                                       output_padding=layer.output_padding)
            a = torch.round(r * 2.0**-WEIGHT_BITS)
        return a
