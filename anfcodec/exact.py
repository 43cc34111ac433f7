"""Integer-exact evaluation of the networks whose output must match on every machine.

The decoder must rebuild exactly the scale indices the encoder used, and every
decoder must produce the same pixels, on any thread count, CPU instruction set
or GPU. Floating-point convolutions do not promise that: their summation order
varies. Here weights and activations are held as integers (fixed point) and
each convolution multiplies those integers exactly (``arith``: int8 digits, float32
digit planes or float64, whichever is fastest here), so the result is the same
whatever the order of summation and whichever arithmetic ran. Between layers only elementwise IEEE operations (multiply by
a power of two, round, multiply, divide, square root) are used, which are
correctly rounded and so deterministic everywhere.

Two precisions are in use: the entropy-parameter network (``ACT_BITS`` /
``WEIGHT_BITS``, frozen: changing them changes the symbols of existing files)
and the synthesis path (``SYNTH_ACT_BITS`` / ``SYNTH_WEIGHT_BITS``, finer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .entropy_models import GDN

ACT_BITS = 10       # entropy parameters: activations on a 2^-10 grid
WEIGHT_BITS = 14    # entropy parameters: weights on a 2^-14 grid
SYNTH_ACT_BITS = 14     # synthesis: activations (image and latent features) on a 2^-14 grid
SYNTH_WEIGHT_BITS = 16  # synthesis: weights on a 2^-16 grid
_EXACT_LIMIT = 2.0**52


class ExactnessError(ArithmeticError):
    """An intermediate value left the range where float64 integer arithmetic is exact."""


def to_grid(x: torch.Tensor, bits: int = ACT_BITS) -> torch.Tensor:
    """Integer-valued float64 tensor round(x * 2^bits)."""
    return torch.round(x.double() * 2.0**bits)


def abs_max(a: torch.Tensor) -> float:
    """max |a| (0 for an empty tensor). One min/max pass: ``linalg.vector_norm(a, inf)`` measured
    10-35 times slower on float64 activations and cost 0.1 s of a 768x512 decode."""
    if not a.numel():
        return 0.0
    if a.dim() == 4 and not a.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last):
        a = a.permute(0, 2, 3, 1)  # a contiguous view: aminmax over channels_last strides was 23x slower
    lo, hi = torch.aminmax(a)
    return max(-lo.item(), hi.item())


def _check(a: torch.Tensor, fan: float, bias_max: float) -> float:
    """Refuse a convolution whose worst-case partial sum could leave exact float64 integers; max |a|."""
    a_max = abs_max(a)
    if a_max * fan + bias_max >= _EXACT_LIMIT:
        raise ExactnessError("fixed-point convolution would exceed 2^52")
    return a_max


# float64 convolutions unfold their input; strips keep that buffer this small. Small enough to stay in
# cache between the unfold and the matrix product that reads it: a 768x512 exact decode took 3.23 s with
# 64 MB strips, 1.88 s with 8 MB, 1.83 s with 4 MB and 1.85 s with 2 MB (same pixels).
STRIP_BYTES = 4 << 20
BAND_BYTES = 8 << 20  # widest activation of one band when a size-keeping network runs band by band
MIN_DIGIT_DEPTH = 256  # shallowest convolution (C_in * k^2) that takes the digit-plane products


class Kernel:
    """Fixed-point convolution weights [C_out, C_in, k, k] and bias (integer-valued float64), with
    their matrix form in each arithmetic backend (``arith``) made on first use."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None = None):
        self.w, self.b = w, b
        self._operands: dict = {}
        self.bias_max = _abs_max(b)
        self.w_max = _abs_max(w)

    def to(self, device: torch.device) -> "Kernel":
        if self.w.device != device:
            self.w = self.w.to(device)
            self.b = None if self.b is None else self.b.to(device)
        return self

    def backend(self, a: torch.Tensor, a_max: float, stride: int) -> arith.Backend:
        """How this layer multiplies its input ``a`` (|a| <= a_max): the measured choice for its
        magnitudes, except that shallow layers keep float64 convolutions. The digit forms' fixed
        costs (splitting, unfolding, combining m + n - 1 results) pay off only for deep products: on
        the fast model, layers with K = 576..6400 ran 1.2-2.6 times faster as int8 digits than in
        float64, the post-filter's (K = 27, 144) not at all, and a lower ``MIN_DIGIT_DEPTH`` was noise."""
        c_out, c_in, k, _ = self.w.shape
        if c_in * k * k < MIN_DIGIT_DEPTH:
            return arith.FLOAT64
        # The first layer of each magnitude class is the sample the backends are timed on: a band of
        # its own output rows, since a synthetic convolution ranked them wrongly (float64 ahead of
        # int8 digits on the default's synthesis, which decoded in 3.99 s against 2.44 s with digits).
        w_out = max(1, (a.shape[-1] - k) // stride + 1)
        h_out = max(1, (a.shape[-2] - k) // stride + 1)

        def sample(be: arith.Backend, outputs: int) -> torch.Tensor:
            # Output rows in the strips ``strip_conv`` would cut for this backend: float64's unfold
            # is 8 times an int8 digit's, so its strips are fewer rows (a sample in one piece ran
            # float64 in a faster regime than decoding does, and chose it wrongly).
            x = a if min(a.shape[-2:]) >= k else F.pad(a, (0, max(0, k - a.shape[-1]), 0, max(0, k - a.shape[-2])))
            n = min(max(1, (x.shape[-2] - k) // stride + 1), max(1, -(-outputs // w_out)))
            step = _strip_rows(be, k, c_in, c_out, w_out)
            return torch.cat([_conv(x[..., r0 * stride:(min(r0 + step, n) - 1) * stride + k, :], self, stride, a_max, be)
                              for r0 in range(0, n, step)], dim=-2)
        return conv_backend(a_max, self.w_max, a.device, sample, a.shape[0] * h_out * w_out)

    def matmul(self, cols: torch.Tensor, max_abs: float, be: arith.Backend) -> torch.Tensor:
        """Digit planes [M, m, K] of the unfolded input (K in (ky, kx, c) order, which makes each
        kernel row one contiguous run of an NHWC input) -> products plus bias, float64 [M, C_out]."""
        key = (be, cols.device)
        if key not in self._operands:
            c_out, c_in, k, _ = self.w.shape
            self._operands[key] = be.prepare(self.w.permute(2, 3, 1, 0).reshape(k * k * c_in, c_out).to(cols.device))
        acc = self._operands[key].rmatmul(cols, max_abs, self.bias_max)
        return acc if self.b is None else acc.add_(self.b)


def _nhwc_digits(x: torch.Tensor, max_abs: float, be: arith.Backend) -> torch.Tensor:
    """Integer-valued [B, C, H, W] with |x| <= max_abs -> the backend's digit planes [n, B, H, W, C]."""
    return be.digits(x.permute(0, 2, 3, 1), max_abs)


def _im2col(d: torch.Tensor, k: int, stride: int) -> torch.Tensor:
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


def _conv(x: torch.Tensor, kernel: Kernel, stride: int, max_abs: float | None = None,
          be: arith.Backend | None = None) -> torch.Tensor:
    """Unpadded conv2d of ``x`` (|x| <= max_abs, where the caller knows it) with integer results, in
    the backend ``be`` (by default the layer's choice)."""
    if be is None:
        max_abs = abs_max(x) if max_abs is None else max_abs
        be = kernel.backend(x, max_abs, stride)
    if be is arith.FLOAT64:
        return F.conv2d(x.double(), kernel.w, kernel.b, stride=stride)
    max_abs = abs_max(x) if max_abs is None else max_abs
    c_out, _, k, _ = kernel.w.shape
    b, h_out, w_out = x.shape[0], (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    cols = _im2col(_nhwc_digits(x, max_abs, be), k, stride)
    return kernel.matmul(cols, max_abs, be).view(b, h_out, w_out, c_out).permute(0, 3, 1, 2)


def conv_backend(a_max: float, w_max: float, device: torch.device, sample, outputs: int,
                 kind: str = "fixed-point") -> arith.Backend:
    """The measured backend for ``kind`` convolutions of inputs up to ``a_max`` by weights up to
    ``w_max``; ``sample(backend, n)`` runs about n of the caller's ``outputs`` output pixels."""
    classes = (arith.magnitude_class(a_max), arith.magnitude_class(w_max))
    return arith.fastest((kind, *classes), sample, torch.device(device).type, outputs)


def _strip_rows(be: arith.Backend, k: int, c_in: int, c_out: int, w_out: int) -> int:
    """Output rows per strip whose unfold stays within ``STRIP_BYTES``: ~3 digit planes of the backend's
    type plus float64 sums, or one float64 unfold."""
    if be is arith.FLOAT64:
        row_bytes = 8 * k * k * c_in * max(w_out, 1)
    else:
        row_bytes = max(w_out, 1) * (3 * be.dtype.itemsize * k * k * c_in + 32 * c_out)
    return max(1, STRIP_BYTES // row_bytes)


def strip_conv(a: torch.Tensor, w: torch.Tensor | Kernel, b: torch.Tensor | None = None, stride: int = 1,
               pad: tuple[int, int] = (0, 0), shuffle: int = 1, max_abs: float | None = None,
               rescale: float | None = None) -> torch.Tensor:
    """conv2d of ``a`` (zero-padded by ``pad`` = (before, after) on both axes), in strips of output rows,
    optionally followed by ``pixel_shuffle(shuffle)``. ``w`` is a ``Kernel`` (with its bias) or a
    weight tensor with bias ``b``; ``max_abs`` is max |a| where the caller knows it. ``rescale``
    requantizes each strip to round(x * rescale) while it is in cache, instead of in two more
    passes over the whole output.

    PyTorch's float64 convolution unfolds its whole input (C_in * k^2 values per output
    sample: 2.4 GB for one layer of a 1024-pixel tile). Computing bands of output rows
    from the matching input rows bounds that buffer, and writing each band into the
    preallocated result avoids a second full-size copy; with integer arithmetic the
    result is bit-identical to one call. Layers with few outputs take ``narrow_conv``.
    """
    kernel = w if isinstance(w, Kernel) else Kernel(w, b)
    c_out, c_in, k, _ = kernel.w.shape
    h, w_pad = a.shape[-2], a.shape[-1] + pad[0] + pad[1]
    h_out = (h + pad[0] + pad[1] - k) // stride + 1
    w_out = (w_pad - k) // stride + 1
    narrow = stride == 1 and 4 * c_out <= c_in
    if not narrow:  # the backend, chosen here on unpadded rows (the first band's choice for every band)
        be = kernel.backend(a, abs_max(a) if max_abs is None else max_abs, stride)
    rows = max(1, STRIP_BYTES // (8 * k * k * c_out * w_pad)) if narrow else _strip_rows(be, k, c_in, c_out, w_out)

    def conv(r0: int, r1: int) -> torch.Tensor:
        # Output rows [r0, r1) from input rows [lo, hi) of the padded input, padded here per band
        # (one copy of the band instead of a padded copy of the whole input and then of the band).
        lo, hi = r0 * stride - pad[0], (r1 - 1) * stride + k - pad[0]
        x = a[..., max(lo, 0):min(hi, h), :]
        if any(pad):
            x = F.pad(x, (pad[0], pad[1], max(-lo, 0), max(hi - h, 0)))
        # A band's own max |x| can need fewer digits than the whole input's (one digit plane fewer
        # in some bands of the fast model's widest layers: ~2% faster decoding there, same integers).
        r = narrow_conv(x, kernel) if narrow else _conv(x, kernel, stride, max_abs if rows >= h_out else None,
                                                        be if be is arith.FLOAT64 else None)
        return r if rescale is None else r.mul_(rescale).round_()
    if rows >= h_out:
        r = conv(0, h_out)
        return F.pixel_shuffle(r, shuffle) if shuffle > 1 else r
    out = torch.empty(a.shape[0], c_out // shuffle**2, h_out * shuffle, w_out * shuffle, dtype=a.dtype, device=a.device,
                      memory_format=torch.channels_last)
    for r0 in range(0, h_out, rows):
        r1 = min(r0 + rows, h_out)
        band = conv(r0, r1)
        out[..., r0 * shuffle:r1 * shuffle, :] = F.pixel_shuffle(band, shuffle) if shuffle > 1 else band
    return out


def narrow_conv(a: torch.Tensor, w: torch.Tensor | Kernel, b: torch.Tensor | None = None) -> torch.Tensor:
    """Unpadded stride-1 conv2d for layers with few output channels (the last layer of a synthesis).

    Unfolding would write C_in * k^2 values per pixel to feed only C_out outputs; instead one
    matrix product gives every tap's contribution (C_out * k^2 values per pixel) and shifted
    sums combine them: 3-4 times faster for 128 -> 12 or 32 -> 3 channels, and still exact
    integer arithmetic. (Its products are too shallow, K = C_in, for the int8 digit form.)
    """
    kernel = w if isinstance(w, Kernel) else Kernel(w, b)
    c_out, c_in, kh, kw = kernel.w.shape
    h, wd = a.shape[-2] - kh + 1, a.shape[-1] - kw + 1
    taps = kernel.w.permute(1, 2, 3, 0).reshape(c_in, kh * kw * c_out)
    out = torch.empty(a.shape[0], h, wd, c_out, dtype=a.dtype, device=a.device)
    for i in range(a.shape[0]):
        part = torch.matmul(a[i].permute(1, 2, 0), taps).view(a.shape[-2], a.shape[-1], kh, kw, c_out)
        acc = part[:h, :wd, 0, 0].clone()
        for dy in range(kh):
            for dx in range(kw):
                if dy or dx:
                    acc += part[dy:dy + h, dx:dx + wd, dy, dx]
        out[i] = acc
    out = out.permute(0, 3, 1, 2)  # channels_last, as the digit products leave their results
    return out if kernel.b is None else out.add_(kernel.b.view(1, -1, 1, 1))


def _abs_max(b: torch.Tensor | None) -> float:
    return 0.0 if b is None else b.abs().max().item()


def _fan(w: torch.Tensor, transposed: bool) -> float:
    """Largest sum of |weight| feeding one output: the worst-case gain of the layer."""
    return w.abs().sum(dim=(0, 2, 3) if transposed else (1, 2, 3)).max().item()


def subpixel_kernel(weight: torch.Tensor, stride: int, padding: int) -> tuple[torch.Tensor, int, int]:
    """A transposed convolution as (padding, conv2d, pixel shuffle): ``(kernel, pad_before, pad_after)``.

    Valid when the transposed convolution maps n to stride * n samples. Output sample
    ``s*q + r`` sums ``a[q - d] * w[r + padding + s*d]`` over the integers d that index the
    kernel, so each phase r is an ordinary correlation; stacking the stride^2 phases as
    output channels in pixel-shuffle order gives one dense convolution without col2im,
    which is faster in float64. Weight layout in: [C_in, C_out, k, k].
    """
    c_in, c_out, k, _ = weight.shape
    d_range = {r: range(-((r + padding) // stride), (k - 1 - r - padding) // stride + 1) for r in range(stride)}
    before = max(0, *(max(d) for d in d_range.values() if d))
    after = max(0, *(-min(d) for d in d_range.values() if d))
    taps = before + after + 1
    kernel = weight.new_zeros(c_out, stride, stride, c_in, taps, taps)
    for ry in range(stride):
        for rx in range(stride):
            for dy in d_range[ry]:
                for dx in d_range[rx]:
                    kernel[:, ry, rx, :, before - dy, before - dx] = \
                        weight[:, :, ry + padding + stride * dy, rx + padding + stride * dx].T
    return kernel.reshape(c_out * stride * stride, c_in, taps, taps), before, after


class ExactSequential:
    """Fixed-point copy of a Sequential of Conv2d / ConvTranspose2d / LeakyReLU / GDN / IGDN layers.

    Activations are integers on the 2^-act_bits grid, weights on the 2^-weight_bits
    grid; every layer returns activations on the input's grid.
    """

    def __init__(self, seq: nn.Module, act_bits: int = ACT_BITS, weight_bits: int = WEIGHT_BITS):
        self.act_bits, self.weight_bits = act_bits, weight_bits
        self.layers = []
        for layer in (seq if isinstance(seq, nn.Sequential) else [seq]):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                if len({*layer.kernel_size}) != 1 or len({*layer.stride}) != 1 or len({*layer.padding}) != 1 \
                        or layer.dilation != (1, 1) or layer.groups != 1:
                    raise TypeError("no exact form for non-square, dilated or grouped convolutions")
                w = torch.round(layer.weight.detach().double() * 2.0**weight_bits)
                b = None if layer.bias is None else \
                    torch.round(layer.bias.detach().double() * 2.0 ** (weight_bits + act_bits))
                kind = "convT" if isinstance(layer, nn.ConvTranspose2d) else "conv"
                fan = _fan(w, kind == "convT")
                if kind == "convT" and self._shuffles(layer):
                    s, (w, before, after) = layer.stride[0], subpixel_kernel(w, layer.stride[0], layer.padding[0])
                    b = None if b is None else b.repeat_interleave(s * s)
                    kind, layer = "shuffle", (s, before, after)
                self.layers.append((kind, Kernel(w, b), layer, fan, _abs_max(b)))
            elif isinstance(layer, nn.LeakyReLU):
                self.layers.append(("leaky", layer.negative_slope, layer, 0.0, 0.0))
            elif isinstance(layer, GDN):
                c = layer.beta.numel()
                beta = layer.beta_reparam(layer.beta).detach().double()
                gamma = layer.gamma_reparam(layer.gamma).detach().double().reshape(c, c, 1, 1)
                g = torch.round(gamma * 2.0**weight_bits)
                b = torch.round(beta * 2.0 ** (weight_bits + act_bits))
                self.layers.append(("igdn" if layer.inverse else "gdn", Kernel(g, b), layer, _fan(g, False), _abs_max(b)))
            else:
                raise TypeError(f"no exact form for {type(layer).__name__}")
        self.halo = self._halo()  # rows of context a band needs; None: the network runs in one pass
        self.conv_width = max([0] + [w.w.shape[0] for kind, w, *_ in self.layers if kind == "conv"])

    @staticmethod
    def _shuffles(layer: nn.ConvTranspose2d) -> bool:
        """Whether the sub-pixel form applies: square, n -> stride * n, no dilation or groups."""
        k, s, p, op = layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.output_padding[0]
        square = len({*layer.kernel_size}) == len({*layer.stride}) == len({*layer.padding}) == 1
        return square and k - 2 * p + op == s and layer.dilation == (1, 1) and layer.groups == 1

    def _halo(self) -> int | None:
        """Rows of context each side that the output needs, when every layer keeps the size (stride-1
        convolutions padded to 'same', pointwise layers); None otherwise."""
        halo = 0
        for kind, w, layer, _, _ in self.layers:
            if kind == "conv":
                k = w.w.shape[-1]
                if layer.stride[0] != 1 or 2 * layer.padding[0] != k - 1:
                    return None
                halo += layer.padding[0]
            elif kind not in ("leaky", "gdn", "igdn"):
                return None
        return halo

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        """``a``: integer-valued float64 activations on the 2^-act_bits grid; returns the same kind.

        A size-keeping network (the post-filter) runs band by band, each band with the rows of
        context its output needs, so that its full-size activations stay in cache from one layer
        to the next. Zero padding at a band's inner edge only disturbs rows within the context,
        which are cropped: the result is the whole-image one.
        """
        halo = self.halo
        width = max(a.shape[1], self.conv_width)
        rows = max(4 * (halo or 0), BAND_BYTES // (8 * a.shape[0] * width * max(a.shape[-1], 1)))
        if halo is None or a.shape[-2] <= rows:
            return self._layers(a)
        h = a.shape[-2]
        out = None
        for r0 in range(0, h, rows):
            r1 = min(r0 + rows, h)
            lo, hi = max(r0 - halo, 0), min(r1 + halo, h)
            band = self._layers(a[..., lo:hi, :])[..., r0 - lo:r1 - lo, :]
            if out is None:
                out = torch.empty(a.shape[0], band.shape[1], h, a.shape[-1], dtype=a.dtype, device=a.device,
                                  memory_format=torch.channels_last)
            out[..., r0:r1, :] = band
        return out

    def _layers(self, a: torch.Tensor) -> torch.Tensor:
        A, W = self.act_bits, self.weight_bits
        owned = False  # never modify the caller's tensor
        for kind, w, layer, fan, bias_max in self.layers:
            if kind == "leaky":  # in place: x * slope for x < 0 is one correctly rounded product, as ever
                if not owned:
                    a, owned = a.clone(), True
                F.leaky_relu(a, w, inplace=True).round_()
                continue
            kernel = w.to(a.device)
            if kind in ("gdn", "igdn"):
                # norm = beta + gamma * x^2, with x^2 requantized to the activation grid first. The
                # 1x1 convolution has no spatial reach, so it runs in bands of rows, in place: one
                # full-size activation alive instead of three (x, x^2 and the norm).
                a_max = abs_max(a)
                if a_max >= 2.0**26:
                    raise ExactnessError("fixed-point GDN input would exceed 2^26")
                sq_max = round(a_max * a_max * 2.0**-A)  # = max of x^2 below
                if sq_max * fan + bias_max >= _EXACT_LIMIT:
                    raise ExactnessError("fixed-point convolution would exceed 2^52")
                if not owned:
                    a, owned = a.clone(), True
                rows = max(1, STRIP_BYTES // (8 * a.shape[0] * a.shape[1] * max(a.shape[-1], 1)))
                for r0 in range(0, a.shape[-2], rows):
                    band = a[..., r0:r0 + rows, :]
                    sq = (band * band).mul_(2.0**-A).round_()
                    norm = _conv(sq, kernel, 1, sq_max).mul_(2.0 ** -(A + W)).sqrt_()
                    (band.mul_(norm) if kind == "igdn" else band.div_(norm)).round_()
                continue
            a_max = _check(a, fan, bias_max)
            if kind == "conv":
                a = strip_conv(a, kernel, None, layer.stride[0], (layer.padding[0], layer.padding[0]), max_abs=a_max,
                               rescale=2.0**-W)
            elif kind == "shuffle":
                stride, before, after = layer
                a = strip_conv(a, kernel, None, 1, (before, after), shuffle=stride, max_abs=a_max, rescale=2.0**-W)
            else:
                a = F.conv_transpose2d(a, kernel.w, kernel.b, stride=layer.stride, padding=layer.padding,
                                       output_padding=layer.output_padding).mul_(2.0**-W).round_()
            owned = True  # a fresh tensor: later layers may work on it in place
        return a
