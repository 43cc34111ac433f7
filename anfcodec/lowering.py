"""One lowering of the decoder networks, shared by every bit-exact arithmetic.

``lower`` turns a ``Sequential`` of Conv2d / ConvTranspose2d / GDN / IGDN / LeakyReLU into
operations: ``Conv`` (a transposed convolution becomes its sub-pixel form: a dense convolution
whose output channels are the stride^2 phases, then a pixel shuffle), ``GDN`` and ``LeakyReLU``.
The two arithmetics of the format run these operations: ``exact`` (activations on fine
fixed-point grids: the entropy parameters and the fine synthesis) and ``int8net`` (8-bit
activations from layer to layer). They differ in how weights and activations become integers
and in what happens between products; the convolution itself is one loop, here:

* ``Product``: the exact integer products of one convolution, in the ``arith`` backend measured
  fastest for its operand magnitudes: digit-plane matrix products of an unfolded input, float64
  convolutions (shallow layers), the per-tap form (layers with few output channels), float32
  convolutions of digit planes where their sums stay exact (``conv32``), or Winograd's F(2x2, 3x3)
  in float64 integers for 3x3 layers (``winograd``);
* ``conv_strips``: output rows in strips, each from the matching zero-padded input rows, its
  products followed, while the strip is in cache, by the caller's per-column step (requantize,
  scale), the pixel shuffle and the caller's per-pixel step (GDN, LeakyReLU, requantize).

Activations are NHWC here (channels contiguous: a kernel row of k * C values is one run).
With integer products every strip size and backend gives the same result.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .decoder import program
from .entropy_models import GDN as GDNLayer

# conv32's convolutions and the pointwise products count themselves (arith.count_products) at the
# layer's size; bound here so that a benchmark's wrapper of F.conv2d does not count them again.
_conv2d = F.conv2d

# Bytes of one strip's unfolded input. Small enough to stay in cache between the unfold and the
# product that reads it: a 768x512 fine-grid decode took 3.23 s with 64 MB float64 strips, 1.88 s
# with 8, 1.83 with 4 and 1.85 with 2; the fast int8 model 0.44-0.46 s with 1 MB digit strips,
# 0.35-0.39 with 2, 0.32-0.35 with 4, 0.32-0.34 with 8 and 0.34-0.37 with 16 (same pixels).
FLOAT64_STRIP_BYTES = 4 << 20
DIGIT_STRIP_BYTES = 8 << 20
# Shallowest product (C_in * k^2) that takes digit planes. Their fixed costs (splitting,
# unfolding, combining m + n - 1 results) pay off only for deep products: on the fast model,
# layers with K = 576..6400 ran 1.2-2.6 times faster as int8 digits than in float64, the
# post-filter's (K = 27, 144) not at all.
MIN_DIGIT_DEPTH = 256
# Bytes of one strip's float64 results in the float32 convolution form (conv32). It reads k - 1
# rows above and below its strip again, so its strips are taller than the unfolding forms'.
CONV_STRIP_BYTES = 8 << 20
# Bytes of one strip's Winograd transforms (input tiles, their products, the output tiles).
WINOGRAD_STRIP_BYTES = 8 << 20


# -- operations ----------------------------------------------------------------------------------
# The operations and the sub-pixel form are the torch-free decoder's (``decoder.program``): one
# lowering for both decoders. Here their arrays are torch tensors (float64, on the CPU).
Conv, GDN, LeakyReLU, Op = program.Conv, program.GDN, program.LeakyReLU, program.Op


def subpixel_kernel(weight: torch.Tensor, stride: int, padding: int) -> tuple[torch.Tensor, int, int]:
    """``program.subpixel_kernel`` of a torch weight [C_in, C_out, k, k] (same dtype and device back)."""
    kernel, before, after = program.subpixel_kernel(weight.detach().cpu().numpy(), stride, padding)
    return torch.from_numpy(kernel).to(weight), before, after


def _square(layer: nn.Module) -> bool:
    return len({*layer.kernel_size}) == len({*layer.stride}) == len({*layer.padding}) == 1 \
        and layer.dilation == (1, 1) and layer.groups == 1


def lower(seq: nn.Module) -> list[Op]:
    """The operations of a network (a Sequential, or one layer), weights float64 torch tensors:
    ``describe`` it, then lower that the way the torch-free decoder does."""
    names = {m: n for n, m in seq.named_modules()}
    arrays = {k: v.detach().cpu().numpy() for k, v in seq.state_dict().items()}
    ops = program.lower(describe(seq, names, arrays), arrays)
    for op in ops:
        for field in ("weight", "bias", "gamma", "beta"):
            if getattr(op, field, None) is not None:
                setattr(op, field, torch.from_numpy(getattr(op, field)))
    return ops


def describe(seq: nn.Module, names: dict[nn.Module, str], arrays: dict) -> list[dict]:
    """A network as the torch-free decoder's program states it (``anfcodec.decoder.program.lower``
    turns it into these same operations): convolutions by the state-dict keys of their weights,
    GDN by its reparametrized gamma and beta, which are added to ``arrays`` (float32, as trained)."""
    spec = []
    for layer in (seq if isinstance(seq, nn.Sequential) else [seq]):
        name = names[layer]
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            if not _square(layer):
                raise TypeError("no exact form for non-square, dilated or grouped convolutions")
            transposed = isinstance(layer, nn.ConvTranspose2d)
            spec.append({"op": "conv", "weight": _key(name, "weight"), "bias": None if layer.bias is None else _key(name, "bias"),
                         "stride": layer.stride[0], "padding": layer.padding[0], "transposed": transposed,
                         "output_padding": layer.output_padding[0] if transposed else 0})
        elif isinstance(layer, GDNLayer):
            c = layer.beta.numel()
            arrays[_key(name, "gamma")] = layer.gamma_reparam(layer.gamma).detach().reshape(c, c).cpu().numpy()
            arrays[_key(name, "beta")] = layer.beta_reparam(layer.beta).detach().cpu().numpy()
            spec.append({"op": "gdn", "gamma": _key(name, "gamma"), "beta": _key(name, "beta"),
                         "inverse": bool(layer.inverse)})
        elif isinstance(layer, nn.LeakyReLU):
            spec.append({"op": "leaky_relu", "slope": layer.negative_slope})
        else:
            raise TypeError(f"no exact form for {type(layer).__name__}")
    return spec


def _key(name: str, attr: str) -> str:
    return f"{name}.{attr}" if name else attr


# -- products ------------------------------------------------------------------------------------
def abs_max(a: torch.Tensor) -> float:
    """max |a| (0 for an empty tensor). One min/max pass: ``linalg.vector_norm(a, inf)`` measured
    10-35 times slower on float64 activations and cost 0.1 s of a 768x512 decode."""
    if not a.numel():
        return 0.0
    lo, hi = torch.aminmax(a)
    return max(-lo.item(), hi.item())


def im2col(d: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """Digits [n, B, H, W, C] -> unfolded [B * H_out * W_out, n, k * k * C], columns in (ky, kx, c) order.

    In NHWC the k * C values of one kernel row are contiguous, so each of the n * k copies moves
    runs of k * C values; an int8 unfold is 8 times smaller than float64's."""
    n, b, h, w, c = d.shape
    if k == stride == n == 1 and d.is_contiguous():
        return d.view(b * h * w, 1, c)  # a pointwise layer (g_s1's 16x16 linear synthesis): no copy
    h_out, w_out = (h - k) // stride + 1, (w - k) // stride + 1
    out = d.new_empty(b, h_out, w_out, n, k, k * c)
    s = d.stride()
    for i in range(n):
        for dy in range(k):
            out[:, :, :, i, dy] = d.as_strided((b, h_out, w_out, k * c), (s[1], stride * s[2], stride * c, 1),
                                               d.storage_offset() + i * s[0] + dy * s[2])
    return out.view(b * h_out * w_out, n, k * k * c)


class Product:
    """The exact integer products of one convolution: integer-valued weights [C_out, C_in, k, k]
    and optional bias (float64), applied to integer NHWC inputs of any dtype; results are
    integer-valued float64 NHWC. ``kind`` names the arithmetic whose backend choice this joins."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None, stride: int, kind: str):
        self.w, self.b, self.stride, self.kind = w, b, stride, kind
        c_out, c_in, k, _ = w.shape
        self.k, self.c_in, self.c_out = k, c_in, c_out
        self.w_max = w.abs().max().item() if w.numel() else 0.0
        self.fan_bound = self.fan() if w.numel() else 0.0
        self.bias_max = 0.0 if b is None else b.abs().max().item()
        self.shallow = c_in * k * k < MIN_DIGIT_DEPTH
        # Few outputs per input (the last layer of a synthesis): the per-tap form, not an unfold.
        self.narrow = stride == 1 and 4 * c_out <= c_in
        self._operands: dict = {}
        self._taps: dict = {}
        # conv32: the weights' 8-bit digit planes; each plane product is exact in float32 while an
        # input digit's bound times the plane's largest column sum of |w| stays below 2^24.
        self.w_digits = arith.digits_for(self.w_max, 8)
        planes = arith.split_digits(arith.to_int(w, self.w_max), self.w_digits, 8, torch.float64) if w.numel() \
            else w.new_zeros(1, *w.shape)
        self.plane_fan = planes.abs().sum(dim=(2, 3, 4)).max().item() if w.numel() else 0.0
        radix = 2.0 ** (8 * torch.arange(self.w_digits, dtype=torch.float64))
        self.digit_gain = (planes.abs().sum(dim=(2, 3, 4)) * radix[:, None]).sum(0).max().item() if w.numel() else 0.0
        self._winograd_gain = None  # max over (tile position, output) of sum_c |U|, on first need
        # Set by a caller that rounds the results to float32 next anyway (the int8 synthesis between
        # layers, GDN's x^2 @ gamma): conv32 then returns float32, skipping two passes. Its single-plane
        # results are exact integers below 2^24; two planes combine as float32(hi * 2^bits + lo), one
        # correctly rounded addition of exact terms, i.e. the exact integer rounded to float32.
        self.float32_results = False

    def to(self, device: torch.device) -> "Product":
        if self.w.device != device:
            self.w = self.w.to(device)
            self.b = None if self.b is None else self.b.to(device)
            self._taps = {}
        return self

    def conv32_bits(self, max_abs: float) -> int:
        """Width of conv32's input digits: 8 bits, or 9 where that needs a plane fewer and keeps
        every plane product below 2^24 (GDN's 16-bit x^2 against 7-bit gamma: two planes, not three)."""
        if arith.digits_for(max_abs, 9) < arith.digits_for(max_abs, 8) and 256.0 * self.plane_fan < arith.CONV32.sum_limit:
            return 9
        return 8

    def conv32_exact(self, max_abs: float, device: torch.device) -> bool:
        """Whether float32 convolutions of digit planes compute this layer exactly for inputs up to
        ``max_abs``: every plane product below 2^24, their combination below 2^53 (CPU only)."""
        bound = min(float(1 << self.conv32_bits(max_abs) - 1), float(max_abs))
        return device.type == "cpu" and self.w.numel() > 0 \
            and bound * self.plane_fan < arith.CONV32.sum_limit \
            and arith.digit_weight(max_abs) * self.digit_gain + self.bias_max < 2.0**53

    def winograd_kernel(self) -> torch.Tensor | None:
        """The 3x3 stride-1 kernel Winograd runs for this layer, or None: the layer's own (3x3, stride
        1), or for a 5x5 stride-2 layer its space-to-depth form. Output o of that layer reads padded
        inputs 2o + ky, i.e. 2x2 blocks o + dy at phase ry with ky = 2 dy + ry: a 3x3 convolution of
        the blocks over 4 C_in channels in (ry, rx, c) order, taps ky = 5 being zero. 36 products per
        output instead of 25, but Winograd's 16 per 4 outputs make it 9/4 x fewer than the direct form."""
        if self.k == 3 and self.stride == 1 and self.w.numel():
            return self.w
        if self.k == 5 and self.stride == 2 and self.w.numel():
            w6 = F.pad(self.w, (0, 1, 0, 1)).view(self.c_out, self.c_in, 3, 2, 3, 2)
            return w6.permute(0, 3, 5, 1, 2, 4).reshape(self.c_out, 4 * self.c_in, 3, 3)
        return None

    def winograd_exact(self, max_abs: float) -> bool:
        """Whether Winograd's F(2x2, 3x3) computes this layer exactly for inputs up to ``max_abs``.

        Input tiles are sums of 4 inputs (|V| <= 4 max_abs), each of the 16 tile products sums
        C_in of them against the transformed weights U = 4 G w G^T (integers), and an output sums 9
        of those products: every partial sum stays below 36 max_abs max_(p,o) sum_c |U[p, c, o]|."""
        if not self.w.numel() or (self.k, self.stride) not in ((3, 1), (5, 2)):  # winograd_kernel's forms
            return False
        if self._winograd_gain is None:  # the kernel (a copy for 5x5 layers) only once, not every decode
            self._winograd_gain = winograd_weights(self.winograd_kernel()).abs().sum(dim=1).max().item()
        return 36.0 * max_abs * self._winograd_gain < 2.0**53

    def fan(self) -> float:
        """Largest sum of |weight| feeding one output: the worst-case gain of the layer."""
        return self.w.abs().sum(dim=(1, 2, 3)).max().item()

    def backend(self, x: torch.Tensor, max_abs: float, pad: tuple[int, int] = (0, 0)) -> arith.Backend:
        """How this layer multiplies the NHWC input ``x`` (|x| <= max_abs): the measured choice for
        its magnitude class, timed on a band of this layer's own output rows in the strips
        ``conv_strips`` would cut (a synthetic convolution, and a sample in one piece, both ranked
        the backends wrongly). Shallow and narrow layers choose only between float64 (their own
        forms), conv32 and Winograd; every layer offers conv32 and Winograd only where they are exact."""
        conv32 = self.conv32_exact(max_abs, x.device)
        winograd = self.winograd_exact(max_abs)
        extra = ([arith.CONV32] if conv32 else []) + ([arith.WINOGRAD] if winograd else [])
        if self.shallow or self.narrow:
            if not extra:
                return arith.FLOAT64
            cands = [arith.FLOAT64, *extra]
        else:
            cands = arith.candidates(x.device.type) + extra
        h_out, w_out = out_size(x, self.k, self.stride, pad)

        def sample(be: arith.Backend, outputs: int) -> torch.Tensor:
            n = min(h_out, max(1, -(-outputs // w_out)))
            step = self.strip_rows(be, w_out, max_abs)
            parts = [self(padded_rows(x, r0, min(r0 + step, n), self.k, self.stride, pad), max_abs, be)
                     for r0 in range(0, n, step)]
            # What the caller keeps: the exact integers, or (float32_results) those rounded to float32.
            return torch.cat([p.float() if self.float32_results else p.double() for p in parts], dim=1)
        classes = (arith.magnitude_class(max_abs), arith.magnitude_class(self.w_max))
        form = ("shallow" if self.shallow else "narrow" if self.narrow else "deep") + ("+conv32" if conv32 else "") \
            + ("+winograd" if winograd else "")
        return arith.fastest((self.kind, *classes, form), sample, x.device.type, x.shape[0] * h_out * w_out,
                             cands=cands, row_macs=self.c_in * self.k * self.k * self.c_out)

    def strip_rows(self, be: arith.Backend, w_out: int, max_abs: float) -> int:
        """Output rows per strip: the unfold (digit planes of the backend's type, or float64) plus
        the float64 results within the strip budget."""
        w_out = max(w_out, 1)
        if be is arith.CONV32:
            planes = be.digit_count(max_abs) * self.w_digits
            return max(2 * self.k, CONV_STRIP_BYTES // (w_out * 8 * self.c_out * planes))
        if be is arith.WINOGRAD:  # whole tiles: an even number of rows
            return 2 * max(1, WINOGRAD_STRIP_BYTES // (16 * w_out * (8 * self.c_in + 5 * self.c_out)))
        if be is not arith.FLOAT64:
            planes = be.digit_count(max_abs) * be.dtype.itemsize
            return max(1, DIGIT_STRIP_BYTES // (w_out * (planes * self.k * self.k * self.c_in + 16 * self.c_out)))
        per_out = self.c_out if self.narrow else self.c_in  # the per-tap products, or the unfold
        return max(1, FLOAT64_STRIP_BYTES // (8 * self.k * self.k * per_out * w_out))

    def __call__(self, x: torch.Tensor, max_abs: float, be: arith.Backend) -> torch.Tensor:
        """Unpadded products of NHWC ``x`` (|x| <= max_abs) -> float64 NHWC [B, H_out, W_out, C_out]
        (float32 where ``float32_results`` allows and every value is below 2^24)."""
        if be is arith.FLOAT64:
            if self.narrow:
                return self._narrow(x, max_abs)
            x = x.double()
            if self.k == self.stride == 1:  # pointwise (GDN's gamma): one matrix product, no unfold
                key = (arith.FLOAT64, x.device)
                if key not in self._operands:
                    self._operands[key] = self.w.reshape(self.c_out, self.c_in).T.to(x.device).contiguous()
                out = x.reshape(-1, self.c_in) @ self._operands[key]
                arith.note("float64", out.numel() * self.c_in, out.numel() * self.c_in)
                out = out if self.b is None else out.add_(self.b)
                return out.view(*x.shape[:3], self.c_out)
            # float64 convolutions have no oneDNN kernel: the generic one ran 13-15% faster on a
            # contiguous NCHW band than on the channels-last view (which also copies the weights).
            out = F.conv2d(x.permute(0, 3, 1, 2).contiguous(), self.w, self.b, stride=self.stride)
            return out.permute(0, 2, 3, 1).contiguous()
        if be is arith.CONV32:
            return self._conv32(x, max_abs)
        if be is arith.WINOGRAD:
            return self._winograd(x)
        b = x.shape[0]
        h_out, w_out = out_size(x, self.k, self.stride)
        key = (be, x.device)
        if key not in self._operands:
            matrix = self.w.permute(2, 3, 1, 0).reshape(self.k * self.k * self.c_in, self.c_out)
            self._operands[key] = be.prepare(matrix.to(x.device))
        acc = self._operands[key].rmatmul(im2col(be.digits(x, max_abs), self.k, self.stride), max_abs, self.bias_max)
        acc = acc if self.b is None else acc.add_(self.b)
        return acc.view(b, h_out, w_out, self.c_out)

    def _conv32(self, x: torch.Tensor, max_abs: float) -> torch.Tensor:
        """Every (input digit, weight digit) plane product in one float32 convolution (input planes
        along the batch, weight planes along the outputs; NHWC is channels-last for oneDNN), then
        combined with exact power-of-two weights in float64."""
        be = arith.CONV32
        bits = self.conv32_bits(max_abs)
        n = arith.digits_for(max_abs, bits)
        if x.dtype.is_floating_point:                   # [n, B, H, W, C_in] float32
            d = arith.split_digits_float(x, n, bits)
        elif n == 1:
            d = x.to(torch.float32)[None]
        else:
            d = arith.split_digits(arith.to_int(x, max_abs), n, bits, torch.float32)
        n, b = d.shape[:2]
        key = (be, x.device)
        if key not in self._operands:  # [w_digits * C_out, C_in, k, k], built only where conv32 runs
            planes = arith.split_digits(arith.to_int(self.w, self.w_max), self.w_digits, 8, torch.float32)
            self._operands[key] = planes.reshape(-1, *self.w.shape[1:]).to(x.device).contiguous(
                memory_format=torch.channels_last)
        p = _conv2d(d.view(n * b, *d.shape[2:]).permute(0, 3, 1, 2), self._operands[key], stride=self.stride)
        p = p.permute(0, 2, 3, 1)                       # [n * B, H_out, W_out, w_digits * C_out]
        h_out, w_out = p.shape[1:3]
        macs = b * h_out * w_out * self.c_out * self.c_in * self.k**2
        arith.note(be.name, macs, macs * n * self.w_digits)
        in32 = self.b is None and self.float32_results
        if n == self.w_digits == 1:
            acc = p.contiguous() if in32 else p.double().contiguous()
        elif n * self.w_digits == 2 and in32:  # float32(hi * 2^shift + lo): one rounding of the exact sum
            p = p.reshape(n, b, h_out, w_out, self.w_digits, self.c_out)
            lo, hi = (p[0, ..., 0, :], p[1, ..., 0, :]) if n == 2 else (p[0, ..., 0, :], p[0, ..., 1, :])
            acc = hi.mul(2.0 ** (bits if n == 2 else 8)).add_(lo)
        else:
            p = p.reshape(n, b, h_out, w_out, self.w_digits, self.c_out)
            acc = torch.zeros(b, h_out, w_out, self.c_out, dtype=torch.float64, device=x.device)
            for i in range(n):
                for j in range(self.w_digits):
                    acc.add_(p[i, :, :, :, j].double(), alpha=2.0 ** (bits * i + 8 * j))
        return acc if self.b is None else acc.add_(self.b)

    def _winograd(self, x: torch.Tensor) -> torch.Tensor:
        """F(2x2, 3x3): the 16 values of each 4x4 input tile d (tiles overlap by 2) become V = B^T d B,
        the 16 tile positions are 16 matrix products with U = 4 G w G^T over the channels, and
        Y = A^T M A / 4 gives each tile's 2x2 outputs (U is 4 times the true transform, which keeps
        it integer; the quarters are exact: every partial sum is a multiple of 1/4 below 2^51). Both transforms are one small matrix product each (Kronecker forms of B^T and
        A^T): single passes of BLAS, measured faster than the separable additions."""
        key = (arith.WINOGRAD, x.device)
        if key not in self._operands:
            self._operands[key] = (winograd_weights(self.winograd_kernel().to(x.device)),
                                   _WINO_IN.to(x.device), _WINO_OUT.to(x.device))
        u, t_in, t_out = self._operands[key]
        x = x.double()
        h_out, w_out = out_size(x, self.k, self.stride)
        if self.stride == 2:  # space to depth: whole 2x2 blocks (a zero row / column completes the last)
            b, h, w, c = x.shape
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2)) if h % 2 or w % 2 else x
            b, h, w, c = x.shape
            x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)
        b, h, w, c = x.shape
        th, tw = -(-h_out // 2), -(-w_out // 2)
        if (2 * th + 2, 2 * tw + 2) != (h, w):  # an odd edge (or a block beyond it): zeros complete the tiles
            x = F.pad(x, (0, 0, 0, max(0, 2 * tw + 2 - w), 0, max(0, 2 * th + 2 - h)))[:, :2 * th + 2, :2 * tw + 2]
        s = x.stride()
        tiles = x.as_strided((4, 4, b, th, tw, c), (s[1], s[2], s[0], 2 * s[1], 2 * s[2], s[3]))
        n = b * th * tw
        v = (t_in @ tiles.reshape(16, n * c)).view(16, n, c)            # B^T d B, every tile
        m = torch.bmm(v, u)                                              # [16, tiles, C_out]
        y = (t_out @ m.view(16, n * self.c_out)).view(2, 2, b, th, tw, self.c_out)  # A^T M A / 4
        macs = b * h_out * w_out * self.c_out * self.c_in * self.k**2
        arith.note(arith.WINOGRAD.name, macs, n * 16 * c * self.c_out)
        out = y.permute(2, 3, 0, 4, 1, 5).reshape(b, 2 * th, 2 * tw, self.c_out)
        if (2 * th, 2 * tw) != (h_out, w_out):
            out = out[:, :h_out, :w_out].contiguous()
        return out if self.b is None else out.add_(self.b)

    def _narrow(self, x: torch.Tensor, max_abs: float) -> torch.Tensor:
        """One matrix product gives every tap's contribution (C_out * k^2 values per pixel) and
        shifted sums combine them: 3-4 times faster than unfolding C_in * k^2 values per pixel
        for 128 -> 12 or 32 -> 3 channels, and still exact integer arithmetic.

        Every partial sum, in the product and across the taps, is bounded by max|x| times the
        layer's fan; below 2^24 float32 holds them all exactly, in any order (the int8 synthesis's
        8-bit inputs), and that runs at twice float64's speed. Wider inputs take float32 too where
        their 8-bit digit planes stay below 2^24 (the 16-bit input of g_s1's last layer: 128 times
        the fan), the planes combined in float64."""
        k = self.k
        planes = 1
        if max_abs * self.fan_bound < 2.0**24:
            dtype = torch.float32
        elif arith.CONV32.digit_bound(max_abs) * self.fan_bound < 2.0**24:
            dtype, planes = torch.float32, arith.digits_for(max_abs, 8)
        else:
            dtype = torch.float64
        if dtype not in self._taps:
            self._taps[dtype] = self.w.permute(1, 2, 3, 0).reshape(self.c_in, k * k * self.c_out).to(dtype)
        taps = self._taps[dtype]
        if planes > 1:  # [planes * B, H, W, C]: the digit planes as images of their own
            d = arith.split_digits_float(x, planes, 8) if x.dtype.is_floating_point else \
                arith.split_digits(arith.to_int(x, max_abs), planes, 8, torch.float32)
            x = d.view(planes * x.shape[0], *x.shape[1:])
        else:
            x = x.to(dtype)
        h, wd = x.shape[1] - k + 1, x.shape[2] - k + 1
        out = torch.empty(x.shape[0], h, wd, self.c_out, dtype=torch.float64 if planes == 1 else dtype, device=x.device)
        for i in range(x.shape[0]):
            part = torch.matmul(x[i], taps).view(x.shape[1], x.shape[2], k, k, self.c_out)
            acc = part[:h, :wd, 0, 0].clone()
            for dy in range(k):
                for dx in range(k):
                    if dy or dx:
                        acc += part[dy:dy + h, dx:dx + wd, dy, dx]
            out[i] = acc
        if planes > 1:  # exact integers below 2^24 per plane; their weighted sum below 2^53
            out = out.view(planes, -1, h, wd, self.c_out)
            acc = out[planes - 1].double()
            for i in range(planes - 2, -1, -1):
                acc.mul_(256.0).add_(out[i])
            out = acc
        return out if self.b is None else out.add_(self.b)


def winograd_weights(w: torch.Tensor) -> torch.Tensor:
    """3x3 weights [C_out, C_in, 3, 3] -> U = 4 G w G^T as [16, C_in, C_out] (tile position major):
    G's halves doubled, so integer weights stay integers."""
    g2 = w.new_tensor([[2.0, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]])
    return torch.einsum("pi,ocij,qj->pqco", g2, w, g2).reshape(16, w.shape[1], w.shape[0]).contiguous()


# B^T and A^T of F(2x2, 3x3), as Kronecker products acting on a tile's 16 values (row-major).
_B_T = torch.tensor([[1.0, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
_A_T = torch.tensor([[1.0, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)
_WINO_IN = torch.kron(_B_T, _B_T)    # [16, 16]
_WINO_OUT = torch.kron(_A_T, _A_T) / 4   # [4, 16], with U's factor of 4 taken out


def out_size(x: torch.Tensor, k: int, stride: int, pad: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """Output rows and columns of a convolution of NHWC ``x``."""
    return tuple(max(1, (n + pad[0] + pad[1] - k) // stride + 1) for n in x.shape[1:3])


def padded_rows(x: torch.Tensor, r0: int, r1: int, k: int, stride: int, pad: tuple[int, int]) -> torch.Tensor:
    """The input rows, zero-padded, that output rows [r0, r1) of a convolution of NHWC ``x`` read:
    one copy of the band instead of a padded copy of the whole input and then of the band."""
    h = x.shape[1]
    lo, hi = r0 * stride - pad[0], (r1 - 1) * stride + k - pad[0]
    band = x[:, max(lo, 0):min(hi, h)]
    if any(pad) or hi > h:
        band = F.pad(band, (0, 0, pad[0], pad[1], max(-lo, 0), max(hi - h, 0)))
    return band


def shuffle_nhwc(v: torch.Tensor, s: int) -> torch.Tensor:
    """pixel_shuffle(s) of NHWC values whose channels are in (c, ry, rx) order."""
    b, h, w, cs = v.shape
    c = cs // (s * s)
    return v.view(b, h, w, c, s, s).permute(0, 1, 4, 2, 5, 3).reshape(b, h * s, w * s, c)


def conv_strips(x: torch.Tensor, product: Product, pad: tuple[int, int], max_abs: float, shuffle: int = 1,
                columns: Callable[[torch.Tensor], torch.Tensor] | None = None,
                pixels: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """A convolution of NHWC integer input ``x`` (|x| <= max_abs) in strips of output rows.

    Each strip: the exact products (float64, bias included), then ``columns`` on them (per
    product column, before the shuffle), the pixel shuffle, then ``pixels`` (per output pixel);
    the results are written into one preallocated NHWC output. PyTorch's float64 convolution
    would unfold its whole input (2.4 GB for one layer of a 1024-pixel tile); strips bound that,
    and keep each strip in cache through the steps after the product."""
    h_out, w_out = out_size(x, product.k, product.stride, pad)
    be = product.backend(x, max_abs, pad)
    rows = product.strip_rows(be, w_out, max_abs)
    s = shuffle
    out = None
    for r0 in range(0, h_out, rows):
        r1 = min(r0 + rows, h_out)
        band = padded_rows(x, r0, r1, product.k, product.stride, pad)
        # A band's own max |x| can need fewer digits than the whole input's (one digit plane fewer
        # in some bands of the fast model's widest layers: ~2% faster decoding there, same integers).
        band_max = max_abs if rows >= h_out or be is arith.FLOAT64 else abs_max(band)
        v = product(band, band_max, be)
        v = v if columns is None else columns(v)
        v = v if s == 1 else shuffle_nhwc(v, s)
        v = v if pixels is None else pixels(v)
        if rows >= h_out:
            return v
        if out is None:
            out = torch.empty(x.shape[0], h_out * s, w_out * s, v.shape[-1], dtype=v.dtype, device=x.device)
        out[:, r0 * s:r1 * s] = v
    return out
