"""The format's exact arithmetics over numpy arrays: the torch-free twin of ``anfcodec.exact`` and
``anfcodec.int8net``, step for step, so that both decoders compute the same integers and pixels.

Convolutions multiply integers exactly: an unfolded strip of the input (im2col) times the integer
weights in float64, whose sums of integers are exact in any order below 2^53 (the fixed point
refuses inputs that could reach 2^52, like ``exact``). Between convolutions only elementwise IEEE
operations, one at a time, each correctly rounded: the same on every machine.
"""
from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .program import GDN, Conv, LeakyReLU, Op

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

ACT_BITS, WEIGHT_BITS = 10, 14             # the entropy parameters' grids: activations, weights
SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS = 14, 16  # the synthesis's (image and latent features)
EXACT_LIMIT = 2.0**52
WIDE_LIMIT, NARROW_LIMIT, SQ_LIMIT = 32639, 127, 65535  # the int8 synthesis's (``anfcodec.int8net``)
STRIP_BYTES = 8 << 20  # one strip's unfolded input (halved per strip where two run at once)
_strip_pool: ThreadPoolExecutor | None = None
_strip_threads = 1
_in_strip = threading.local()


def use_strip_threads(threads: int) -> None:
    """Run each convolution's strips on ``threads`` threads (1: in the caller's thread, the default).

    numpy runs its elementwise steps on one core and releases the GIL in them and in BLAS, so with
    BLAS at one thread per call (``OPENBLAS_NUM_THREADS=1`` before numpy loads; the CLI does this
    for its own process) whole strips, products and steps, run side by side instead of only the
    products. With BLAS threaded too they would oversubscribe the cores. Every strip computes the
    same values in either case: only the order in which strips finish changes."""
    from concurrent.futures import ThreadPoolExecutor  # here, not at import: only a caller who asks pays for it
    global _strip_pool, _strip_threads
    if _strip_pool is not None:
        _strip_pool.shutdown()
    _strip_threads = max(1, threads)
    _strip_pool = ThreadPoolExecutor(threads, thread_name_prefix="anfcodec-strip") if threads > 1 else None


def _on_strip_threads() -> bool:
    """Whether this call's strips go to the strip threads: a pool exists and this is not a strip."""
    return _strip_pool is not None and not getattr(_in_strip, "active", False)


def _strip_rows(rows: int, h_out: int) -> int:
    """Output rows per strip: on strip threads at most half as many bytes per strip, and at least
    one strip per thread (a small layer is one strip otherwise)."""
    if not _on_strip_threads():
        return rows
    return max(1, min(rows // 2, -(-h_out // _strip_threads)))


def _run_strips(strip, h_out: int, rows: int) -> np.ndarray:
    """The output of ``strip(r0, r1)`` (one finished strip: output rows r0..r1, times the pixel
    shuffle) over 0..h_out, on the strip threads where they are in use. A strip's own steps that
    run strips again (GDN's product) stay in its thread."""
    out, lock = None, threading.Lock()

    def place(r0: int) -> None:
        nonlocal out
        r1 = min(r0 + rows, h_out)
        v = strip(r0, r1)
        scale = v.shape[1] // (r1 - r0)
        with lock:
            if out is None:
                out = np.empty((v.shape[0], h_out * scale, *v.shape[2:]), dtype=v.dtype)
        out[:, r0 * scale:r1 * scale] = v

    def place_in_thread(r0: int) -> None:
        _in_strip.active = True
        try:
            place(r0)
        finally:
            _in_strip.active = False

    starts = range(0, h_out, rows)
    if not _on_strip_threads() or len(starts) < 2:
        for r0 in starts:
            place(r0)
    else:
        list(_strip_pool.map(place_in_thread, starts))
    return out


class ExactnessError(ArithmeticError):
    """An intermediate value left the range where float64 integer arithmetic is exact."""


def to_grid(x: np.ndarray, bits: int = ACT_BITS) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * 2.0**bits)


def shuffle_nhwc(v: np.ndarray, s: int) -> np.ndarray:
    """pixel_shuffle(s) of NHWC values whose channels are in (c, ry, rx) order."""
    b, h, w, cs = v.shape
    c = cs // (s * s)
    return v.reshape(b, h, w, c, s, s).transpose(0, 1, 4, 2, 5, 3).reshape(b, h * s, w * s, c)


def hwio(w: np.ndarray) -> np.ndarray:
    """Convolution weights [C_out, C_in, k, k] -> [k, k, C_in, C_out], the layout ``Product``
    multiplies (rows in the unfolded input's (ky, kx, c) order) and compiled programs store."""
    return np.ascontiguousarray(np.asarray(w).transpose(2, 3, 1, 0))


class Product:
    """The exact integer products of one convolution: integer weights [k, k, C_in, C_out] (``hwio``;
    any integer or float type), multiplied in float64."""

    def __init__(self, w: np.ndarray, bias: np.ndarray | None, stride: int):
        self.k, _, self.c_in, self.c_out = w.shape
        self.stride, self.bias = stride, bias
        self.matrix = np.asarray(w.reshape(-1, self.c_out), dtype=np.float64)  # a contiguous cast: cheap start-up
        self.fan = float(np.abs(w).sum(axis=(0, 1, 2), dtype=np.float64).max()) if w.size else 0.0
        self.bias_max = 0.0 if bias is None else float(np.abs(bias).max())

    @functools.cached_property
    def matrix32(self) -> np.ndarray:
        """The weights in float32, built when a product first runs there (the fine fixed point never
        does: building every layer's copy up front cost a default-model decode ~0.1 s of start-up)."""
        return self.matrix.astype(np.float32)

    def strips(self, x: np.ndarray, pad: tuple[int, int], shuffle: int = 1, columns=None, pixels=None,
               max_abs: float | None = None, float32_results: bool = False) -> np.ndarray:
        """NHWC integer input -> the convolution in strips of output rows: products (bias included),
        ``columns`` per product column, the pixel shuffle, ``pixels`` per output pixel.

        With inputs known to stay within ``max_abs``, where max_abs times the layer's fan stays
        below 2^24 every partial sum of float32 GEMM is an exact integer, in any order: the int8
        synthesis's 8-bit layers run there, twice float64's speed. Their results come back float32
        if ``float32_results`` (the caller rounds to float32 next anyway), else float64."""
        k, s = self.k, self.stride
        in32 = max_abs is not None and max_abs * self.fan < 2.0**24
        if s == 1 and k > 1 and 4 * self.c_out <= self.c_in:
            return self._narrow(x, pad, shuffle, columns, pixels, in32, float32_results)
        matrix = self.matrix32 if in32 else self.matrix
        b, h, w, c = x.shape
        h_out, w_out = (h + sum(pad) - k) // s + 1, (w + sum(pad) - k) // s + 1
        rows = _strip_rows(max(1, STRIP_BYTES // ((4 if in32 else 8) * w_out * k * k * c)), h_out)

        def strip(r0: int, r1: int) -> np.ndarray:
            band = padded_rows(x, r0 * s - pad[0], (r1 - 1) * s + k - pad[0], pad)
            win = sliding_window_view(band, (k, k), axis=(1, 2))[:, ::s, ::s]   # [B, rows, W_out, C, k, k]
            cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c).astype(matrix.dtype, copy=False)
            v = cols @ matrix
            if in32 and not (float32_results and self.bias is None):
                v = v.astype(np.float64)
            if self.bias is not None:
                v += self.bias
            return _finish(v.reshape(b, r1 - r0, w_out, self.c_out), shuffle, columns, pixels)
        return _run_strips(strip, h_out, rows)

    def _narrow(self, x, pad, shuffle, columns, pixels, in32: bool, float32_results: bool) -> np.ndarray:
        """Few outputs per input (a synthesis's last layer): one product gives every tap's
        contribution (C_out * k^2 values per pixel) and shifted sums combine them, instead of an
        unfold of C_in * k^2 values per pixel. The same exact integers: every partial sum is bounded
        by max|x| times the fan, as in the unfolded product."""
        k, dtype = self.k, np.float32 if in32 else np.float64
        taps = self.__dict__.setdefault("_taps", {})
        if dtype not in taps:
            w = self.matrix.reshape(k, k, self.c_in, self.c_out)   # (ky, kx, c) rows
            taps[dtype] = np.ascontiguousarray(w.transpose(2, 0, 1, 3).reshape(self.c_in, -1), dtype=dtype)
        b, h, w_, c = x.shape
        w_ += sum(pad)
        h_out, w_out = h + sum(pad) - k + 1, w_ - k + 1
        rows = _strip_rows(max(1, STRIP_BYTES // (8 * w_ * k * k * self.c_out)), h_out)

        def strip(r0: int, r1: int) -> np.ndarray:
            band = padded_rows(x, r0 - pad[0], r1 + k - 1 - pad[0], pad).astype(dtype, copy=False)
            part = (band.reshape(-1, c) @ taps[dtype]).reshape(b, r1 - r0 + k - 1, w_, k, k, self.c_out)
            v = part[:, :r1 - r0, :w_out, 0, 0].copy()
            for dy in range(k):
                for dx in range(k):
                    if dy or dx:
                        v += part[:, dy:dy + r1 - r0, dx:dx + w_out, dy, dx]
            if not (in32 and float32_results and self.bias is None):
                v = v.astype(np.float64)
            if self.bias is not None:
                v += self.bias
            return _finish(v, shuffle, columns, pixels)
        return _run_strips(strip, h_out, rows)


def padded_rows(x: np.ndarray, lo: int, hi: int, pad: tuple[int, int]) -> np.ndarray:
    """Rows lo..hi of NHWC ``x`` zero-padded by ``pad`` on both axes (rows outside x are padding):
    one strip's input, padded while it is small instead of a padded copy of the whole input."""
    h = x.shape[1]
    band = x[:, min(max(lo, 0), h):min(max(hi, 0), h)]
    top, bottom = min(max(-lo, 0), hi - lo), min(max(hi - h, 0), hi - lo)
    if top or bottom or any(pad):
        band = np.pad(band, ((0, 0), (top, bottom), pad, (0, 0)))
    return band


def _finish(v: np.ndarray, shuffle: int, columns, pixels) -> np.ndarray:
    """A strip's products: ``columns``, the pixel shuffle, ``pixels``."""
    v = v if columns is None else columns(v)
    v = v if shuffle == 1 else shuffle_nhwc(v, shuffle)
    return v if pixels is None else pixels(v)


def _abs_max(a: np.ndarray) -> float:
    return float(max(a.max(), -a.min())) if a.size else 0.0  # two reductions, no |a| array


class ExactNet:
    """``anfcodec.exact.ExactSequential``: activations integers on the 2^-act_bits grid, weights on
    the 2^-weight_bits grid; NCHW float64 in and out."""

    def __init__(self, ops: list[Op], act_bits: int = ACT_BITS, weight_bits: int = WEIGHT_BITS):
        self.act_bits, self.weight_bits = act_bits, weight_bits
        self.layers = []
        A, W = act_bits, weight_bits
        for op in ops:
            if isinstance(op, Conv):
                b = None if op.bias is None else np.rint(op.bias * 2.0 ** (W + A))
                w = op.compiled(f"grid{W}", lambda op=op: hwio(np.rint(op.weight * 2.0**W)))
                self.layers.append((op, Product(w, b, op.stride)))
            elif isinstance(op, GDN):
                c = op.beta.size
                gamma = op.compiled(f"grid{W}", lambda op=op: hwio(np.rint(op.gamma * 2.0**W).reshape(c, c, 1, 1)))
                self.layers.append((op, Product(gamma, np.rint(op.beta * 2.0 ** (W + A)), 1)))
            else:
                self.layers.append((op, None))

    def __call__(self, a: np.ndarray) -> np.ndarray:
        x = a.transpose(0, 2, 3, 1).copy()  # this network's own array: the steps below work in place
        x_max = _abs_max(x)  # max |x| of the current activation, for the exactness bound
        layers, i = self.layers, 0
        while i < len(layers):
            op, product = layers[i]
            if isinstance(op, Conv):
                if x_max * product.fan + product.bias_max >= EXACT_LIMIT:
                    raise ExactnessError("fixed-point convolution would exceed 2^52")
                # The step after a convolution runs on each strip while it is in cache, instead of
                # on whole 100 MB arrays: the same elementwise operations, so the same values. The
                # output's max |x| is taken there too, strip by strip.
                step = layers[i + 1] if i + 1 < len(layers) and not isinstance(layers[i + 1][0], Conv) else None
                maxima = []
                x = product.strips(x, op.pad, op.shuffle, columns=lambda v: _scaled_rint(v, 2.0**-self.weight_bits),
                                   pixels=functools.partial(self._strip_end, step, maxima))
                x_max = max(maxima)
                i += 1 + (step is not None)
            else:
                x = self._step(op, product, x)
                x_max = _abs_max(x)
                i += 1
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _strip_end(self, step, maxima: list, v: np.ndarray) -> np.ndarray:
        v = v if step is None else self._step(*step, v)
        maxima.append(_abs_max(v))
        return v

    def _step(self, op: Op, product: Product | None, x: np.ndarray) -> np.ndarray:
        """LeakyReLU or GDN, in place on x (a whole activation or one strip of it)."""
        if isinstance(op, LeakyReLU):
            np.multiply(x, op.slope, out=x, where=x < 0)
            return np.rint(x, out=x)
        A, W = self.act_bits, self.weight_bits
        a_max = _abs_max(x)  # per strip the same refusal as for the whole: the bounds grow with a_max
        if a_max >= 2.0**26:
            raise ExactnessError("fixed-point GDN input would exceed 2^26")
        if round(a_max * a_max * 2.0**-A) * product.fan + product.bias_max >= EXACT_LIMIT:
            raise ExactnessError("fixed-point convolution would exceed 2^52")
        sq = np.multiply(x, x)
        norm = product.strips(_scaled_rint(sq, 2.0**-A), (0, 0))
        norm *= 2.0 ** -(A + W)
        np.sqrt(norm, out=norm)
        if op.inverse:
            x *= norm
        else:
            x /= norm
        return np.rint(x, out=x)


def _scaled_rint(v: np.ndarray, scale: float) -> np.ndarray:
    """In place: round(v * scale), half to even."""
    v *= scale
    return np.rint(v, out=v)


def _round_clip(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """In place: clamp(round(v), lo, hi), round half to even (as torch.round)."""
    np.rint(v, out=v)
    return np.clip(v, lo, hi, out=v)


def _f32(v) -> np.float32:
    return np.float32(v)


class Int8Conv:
    """One convolution of ``anfcodec.int8net`` (its docstring is the format's definition), with the
    operation after it."""

    def __init__(self, op: Conv, amax: float, wide: bool, post: GDN | LeakyReLU | None, post_amax: float):
        rep = op.shuffle**2
        s_w = op.compiled("int8_scale", lambda: np.maximum(op.output_scale_groups(), 2.0**-60) / 127, integers=False)
        s_col = np.repeat(s_w, rep)
        bias = op.bias if op.bias is not None else np.zeros_like(s_col)
        self.limit = WIDE_LIMIT if wide else NARROW_LIMIT
        self.s_in = max(float(amax), 2.0**-60) / self.limit
        self.inv_s_in = _f32(1.0 / self.s_in)
        self.pad, self.shuffle = op.pad, op.shuffle
        self.product = Product(op.compiled("int8", lambda: hwio(np.rint(op.weight / s_col.reshape(-1, 1, 1, 1)))),
                               None, op.stride)
        self.scale = (self.s_in * s_col).astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.out_scale64 = self.s_in * s_col * 2.0**SYNTH_ACT_BITS
        self.bias64 = bias * 2.0**SYNTH_ACT_BITS
        self.gdn = post if isinstance(post, GDN) else None
        if self.gdn is not None:
            s_g = post.compiled("int8_scale", lambda: np.maximum(post.gamma.max(axis=1), 2.0**-60) / 127, integers=False)
            c = post.beta.size
            gamma = post.compiled("int8", lambda: hwio(np.rint(post.gamma / s_g[:, None]).reshape(c, c, 1, 1)))
            self.gamma = Product(gamma, None, 1)
            s_sq = max(float(post_amax), 2.0**-60) ** 2 / SQ_LIMIT
            self.inv_s_sq = _f32(1.0 / s_sq)
            self.norm_scale = (s_sq * s_g).astype(np.float32)
            self.beta = post.beta.astype(np.float32)
        self.slope = _f32(post.slope) if isinstance(post, LeakyReLU) else None

    def quantize(self, grid: np.ndarray) -> np.ndarray:
        """float64 2^-14-grid NCHW -> this convolution's integer input, NHWC."""
        v = grid.transpose(0, 2, 3, 1) * (2.0**-SYNTH_ACT_BITS / self.s_in)
        return np.clip(np.rint(v), -self.limit, self.limit)

    def __call__(self, x: np.ndarray, nxt: "Int8Conv | None") -> np.ndarray:
        if nxt is None:
            out = self.product.strips(x, self.pad, self.shuffle, max_abs=self.limit,
                                      columns=lambda acc: np.rint(acc * self.out_scale64 + self.bias64))
            return out.transpose(0, 3, 1, 2)
        return self.product.strips(x, self.pad, self.shuffle, max_abs=self.limit, float32_results=True,
                                   columns=self._columns, pixels=lambda v: nxt.requantize(self._post(v)))

    # The steps below work in place on the strip's own fresh arrays: the same IEEE operations in
    # the same order as the torch decoder's, without a temporary per operation.
    def _columns(self, acc: np.ndarray) -> np.ndarray:
        v = acc.astype(np.float32, copy=False)  # the strip's own products: free to overwrite
        v *= self.scale
        v += self.bias
        return v

    def _post(self, v: np.ndarray) -> np.ndarray:
        if self.gdn is not None:
            sq = np.multiply(v, v)
            sq *= self.inv_s_sq
            _round_clip(sq, 0, SQ_LIMIT)
            norm = self._gamma_product(sq)
            norm *= self.norm_scale
            norm += self.beta
            np.sqrt(norm, out=norm)
            if self.gdn.inverse:
                v *= norm
            else:
                v /= norm
            return v
        if self.slope is not None:
            return np.where(v > 0, v, v * self.slope)
        return v

    def requantize(self, v: np.ndarray) -> np.ndarray:
        v *= self.inv_s_in
        return _round_clip(v, -self.limit, self.limit)

    def _gamma_product(self, sq: np.ndarray) -> np.ndarray:
        """x^2 @ gamma, the exact integer rounded once to float32. x^2 (16 bits) as two 8-bit planes
        hi * 256 + lo: each plane's float32 product is exact (255 times the fan stays below 2^24),
        hi's times 256 too, and their one float32 addition rounds the exact sum once."""
        g = self.gamma
        if 255 * g.fan >= 2.0**24:
            return g.strips(sq, (0, 0)).astype(np.float32)
        flat = sq.reshape(-1, sq.shape[-1])
        hi = flat * np.float32(1 / 256)
        np.floor(hi, out=hi)
        lo = hi * np.float32(-256)
        lo += flat
        out = hi @ g.matrix32
        out *= np.float32(256)
        out += lo @ g.matrix32
        return out.reshape(*sq.shape[:-1], g.c_out)


def wide_inputs(name: str, is_conv: list[bool]) -> set[int]:
    """Indices of the convolutions with 16-bit (two-digit) inputs among a network's layers (True
    where a layer is a convolution): every network's first, and the last of g_s1's branch."""
    convs = [i for i, c in enumerate(is_conv) if c]
    return {convs[0]} | ({convs[-1]} if name == "g_s1_branch" else set())


def scaled_count(ops: list[Op]) -> int:
    """Activation scales a network stores: one per convolution and one per GDN."""
    return sum(isinstance(op, (Conv, GDN)) for op in ops)


class Int8Net:
    """``anfcodec.int8net.Int8Sequential``: float64 2^-14-grid NCHW in and out."""

    def __init__(self, name: str, ops: list[Op], scales: list[float]):
        amax = dict(zip([i for i, op in enumerate(ops) if isinstance(op, (Conv, GDN))], scales, strict=True))
        wide = wide_inputs(name, [isinstance(op, Conv) for op in ops])
        self.convs = []
        for i, op in enumerate(ops):
            if isinstance(op, Conv):
                post = ops[i + 1] if i + 1 < len(ops) and not isinstance(ops[i + 1], Conv) else None
                self.convs.append(Int8Conv(op, amax[i], i in wide, post, amax.get(i + 1, 0.0)))

    def __call__(self, grid: np.ndarray) -> np.ndarray:
        x = self.convs[0].quantize(grid)
        for i, conv in enumerate(self.convs):
            x = conv(x, self.convs[i + 1] if i + 1 < len(self.convs) else None)
        return x
