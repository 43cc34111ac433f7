"""Neural building blocks of the ANF transforms.

The learned transforms start from an exactly orthonormal 16x16 block DCT of a
decorrelated colour space (a JPEG-like codec on day one) and add nonlinear
GDN branches whose last layer starts at zero, so training only has to learn
the corrections. GDN/IGDN come from compressai, not re-written here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .entropy_models import GDN  # imported there without compressai's jit warnings

# Orthonormal opponent colour basis: luma, blue-yellow, red-green.
COLOUR_BASIS = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [-1 / math.sqrt(6), -1 / math.sqrt(6), 2 / math.sqrt(6)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
    ],
    dtype=torch.float64,
)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix, rows are frequencies."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def dct_atoms(channels: int, block: int = 16, chroma_per_plane: int = 16) -> list[tuple[int, int, int]]:
    """(colour plane, vertical freq, horizontal freq) of each latent channel.

    ``channels - 2*chroma_per_plane`` luma atoms, then ``chroma_per_plane`` of
    each chroma plane, each plane ordered from low to high frequency.
    """
    freqs = sorted(((k, l) for k in range(block) for l in range(block)), key=lambda f: (f[0] + f[1], f[0]))
    n_luma = channels - 2 * chroma_per_plane
    if n_luma <= 0 or n_luma > block * block:
        raise ValueError(f"cannot split {channels} channels into DCT atoms")
    return [(plane, k, l) for plane, count in ((0, n_luma), (1, chroma_per_plane), (2, chroma_per_plane))
            for k, l in freqs[:count]]


def block_dct_basis(channels: int, block: int = 16) -> torch.Tensor:
    """Conv weight [channels, 3, block, block] of the lowest-frequency DCT atoms.

    The rows are orthonormal, so the transposed convolution with the same weight
    is the exact inverse on the kept subspace.
    """
    d = dct_matrix(block)
    atoms = [COLOUR_BASIS[plane][:, None, None] * torch.outer(d[k], d[l])[None]
             for plane, k, l in dct_atoms(channels, block)]
    return torch.stack(atoms).float()


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class ConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution that, in inference with few output channels, runs as its sub-pixel
    form (``lowering.subpixel_kernel``: a dense convolution whose outputs are the stride^2 phases,
    then a pixel shuffle). The same parameters and the same function, up to float rounding.

    oneDNN's transposed kernels are slow for a handful of outputs: on the AVX2 EPYC the image
    layers of g_s (64 -> 3, 5x5, at 256x384) took 31 ms against 19 in sub-pixel form, and the 16x16
    block synthesis (256 -> 3) 13 ms against 5-7; a 64 -> 64 layer was slower in sub-pixel form
    (35 vs 49-59 ms), as its stride^2 phases pad the 5x5 kernel to 3x3 taps each (36 for 25)."""

    SUBPIXEL_MAX_CHANNELS = 16

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or output_size is not None \
                or self.out_channels > self.SUBPIXEL_MAX_CHANNELS or not self._maps_n_to_stride_n():
            return super().forward(x, output_size)
        weight, bias, before, after = self._subpixel()
        s = self.stride[0]
        return nn.functional.pixel_shuffle(
            nn.functional.conv2d(nn.functional.pad(x, (before, after, before, after)), weight, bias), s)

    def _maps_n_to_stride_n(self) -> bool:
        from .lowering import _square
        k, s, p, op = self.kernel_size[0], self.stride[0], self.padding[0], self.output_padding[0]
        return _square(self) and k - 2 * p + op == s

    def _subpixel(self):
        """The sub-pixel kernel, rebuilt whenever the weights change (training, loading)."""
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device, self.weight.dtype,
               None if self.bias is None else (self.bias._version, self.bias.data_ptr()))
        if getattr(self, "_subpixel_key", None) != key:
            from .lowering import subpixel_kernel
            s = self.stride[0]
            w, before, after = subpixel_kernel(self.weight.detach(), s, self.padding[0])
            bias = None if self.bias is None else self.bias.detach().repeat_interleave(s * s)
            self._subpixel_cache, self._subpixel_key = (w, bias, before, after), key
        return self._subpixel_cache


def zero_init(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def analysis_branch(cin: int, n: int, cout: int, zero_last: bool = True) -> nn.Sequential:
    """Four stride-2 5x5 convolutions with GDN: 1/16 resolution."""
    last = conv(n, cout)
    return nn.Sequential(
        conv(cin, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), zero_init(last) if zero_last else last
    )


def synthesis_branch(cin: int, n: int, cout: int, zero_last: bool = True) -> nn.Sequential:
    """Four stride-2 5x5 transposed convolutions with IGDN: x16 resolution."""
    last = deconv(n, cout)
    return nn.Sequential(
        deconv(cin, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
        deconv(n, n), GDN(n, inverse=True), zero_init(last) if zero_last else last,
    )


class BlockTransformAnalysis(nn.Module):
    """g_a = block DCT (learnable, DCT-initialised) + zero-started GDN branch."""

    def __init__(self, n: int, m: int, block: int = 16):
        super().__init__()
        self.linear = nn.Conv2d(3, m, block, stride=block, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(block_dct_basis(m, block))
        self.branch = analysis_branch(3, n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.branch(x)


class BlockTransformSynthesis(nn.Module):
    """g_s = transposed block DCT + zero-started IGDN branch."""

    def __init__(self, n: int, m: int, block: int = 16):
        super().__init__()
        self.linear = ConvTranspose2d(m, 3, block, stride=block, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(block_dct_basis(m, block))
        self.branch = synthesis_branch(m, n, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z) + self.branch(z)


class HyperAnalysis(nn.Module):
    """h_a: latent (1/16) -> hyperlatent (1/64)."""

    def __init__(self, m: int, n: int):
        super().__init__()
        self.net = nn.Sequential(
            conv(m, n, 3, 1), nn.LeakyReLU(inplace=True),
            conv(n, n), nn.LeakyReLU(inplace=True), conv(n, n),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class HyperSynthesis(nn.Module):
    """h_s: hyperlatent -> (mean, log-scale) of the latent, 2*m channels."""

    def __init__(self, n: int, m: int):
        super().__init__()
        self.net = nn.Sequential(
            deconv(n, n), nn.LeakyReLU(inplace=True),
            deconv(n, n * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(n * 3 // 2, 2 * m, 3, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class PostFilter(nn.Module):
    """Quality-enhancement residual CNN applied after the inverse flow.

    Its last layer starts at zero so the untrained filter is the identity; a
    per-quality strength lets low qualities smooth more than high ones.
    """

    def __init__(self, width: int, num_qualities: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(inplace=True),
            zero_init(nn.Conv2d(width, 3, 3, padding=1)),
        )
        self.strength = nn.Parameter(torch.ones(num_qualities))

    def forward(self, x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        return x + strength.view(-1, 1, 1, 1) * self.net(x)
