"""Exact integer matrix products on the CPU's int8 units, for the fixed-point networks.

The fixed-point decoder (``exact``) multiplies integers of up to ~24 bits. float64
holds them exactly but its matrix product is the slowest one a CPU has (22-56
GMAC/s here); int8 products with int32 sums (``torch._int_mm``, VNNI/AMX) ran at
200-800 GMAC/s. So each integer is split into balanced base-2^bits digits, every
pair of digit planes is multiplied in int8 with exact int32 sums, and the partial
products are recombined with shifts:

    a @ b = sum_ij (A_i @ B_j) * 2^(bits (i + j))

Everything is integer arithmetic, so the result is the same integer the float64
product gives, on every thread count and instruction set, provided the int8
product itself is exact: ``digit_bits`` probes that once per process and narrows
the digits to 7 bits on CPUs whose int8 kernels saturate full-range ones.
"""
from __future__ import annotations

import functools

import torch


def max_depth(bits: int) -> int:
    """Longest inner dimension whose int32 sums stay exact: a product of two digits is at most 4^(bits-1)."""
    return (2**31 - 1) // 4 ** (bits - 1)


def digits_for(max_abs: float, bits: int) -> int:
    """Balanced base-2^bits digits needed for every integer of magnitude <= max_abs (at least 1)."""
    half = 1 << bits - 1
    n, reach = 1, half - 1
    while max_abs > reach:
        n, reach = n + 1, (reach << bits) + half - 1
    return n


def split_digits(v: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """Integer tensor -> int8 digits [n, *v.shape] in [-2^(bits-1), 2^(bits-1)) with v = sum_i digit_i 2^(bits i).

    ``v`` must be an int32/int64 tensor whose values ``digits_for`` admits for ``n``;
    it is consumed (overwritten).
    """
    half = 1 << bits - 1
    out = torch.empty((n, *v.shape), dtype=torch.int8, device=v.device)
    for i in range(n - 1):
        d = (v + half).bitwise_and_((1 << bits) - 1).sub_(half)  # balanced digit
        out[i].copy_(d)
        v.sub_(d).bitwise_right_shift_(bits)                      # exact: v - d is a multiple of 2^bits
    out[n - 1].copy_(v)
    return out


def to_int(x: torch.Tensor, max_abs: float) -> torch.Tensor:
    """Integer-valued float tensor -> int32, or int64 where values (plus a digit's offset in
    ``split_digits``) could leave int32 (a new tensor)."""
    dtype = torch.int32 if max_abs < 2**30 else torch.int64
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def _exact_here(bits: int) -> bool:
    """Whether ``torch._int_mm`` returns exact sums for digits of this width, probed at several shapes.

    CPUs without VNNI (and oneDNN capped below it) multiply int8 pairs with vpmaddubsw, whose
    pairwise sums saturate at 2^15: full-range digits then come out wrong (measured here with
    ONEDNN_MAX_CPU_ISA=AVX512_CORE, AVX2 or SSE41), while 7-bit digits stay exact. The probe puts
    the extreme digits side by side, where saturation shows.
    """
    half = 1 << bits - 1
    g = torch.Generator().manual_seed(bits)
    for rows, depth, cols in ((17, 64, 8), (200, 576, 64), (64, 2304, 48), (33, 27, 16)):
        a = torch.randint(-half, half, (rows, depth), generator=g, dtype=torch.int8)
        b = torch.randint(-half, half, (depth, cols), generator=g, dtype=torch.int8)
        a[::2] = -half
        a[1::4] = half - 1
        b[:, ::2] = -half
        b[:, 1::4] = half - 1
        if not torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long()):
            return False
    return True


@functools.lru_cache(maxsize=None)
def digit_bits(device: str = "cpu") -> int:
    """Digit width whose int8 products are exact here: 8, 7, or 0 where there is none (CUDA's
    ``_int_mm`` has shape rules of its own, so only the CPU takes this path)."""
    if device != "cpu" or not hasattr(torch, "_int_mm"):
        return 0
    try:
        return next((bits for bits in (8, 7) if _exact_here(bits)), 0)
    except (RuntimeError, NotImplementedError):
        return 0


def available(device: str = "cpu") -> bool:
    return digit_bits(device) > 0


def digit_weight(max_abs: float) -> float:
    """A bound on sum_i |digit_i| * 2^(bits i) over the balanced digits of integers up to max_abs.

    Below the top digit t the digits reach at most r = 2^(bits-1) (2^(bits t) - 1) / (2^bits - 1)
    < 0.51 * 2^(bits t), in value and in weight; the top one carries |v| + r at most, and as it
    is nonzero, 2^(bits t) <= |v| + r, so 2^(bits t) < 2.05 |v|. In all, under 3.1 |v|:
    4 |v| + 256 is safe for 7- and 8-bit digits.
    """
    return 4.0 * max_abs + 256.0


class DigitMatrix:
    """A fixed right-hand operand ``b`` [K, N] (integer-valued), kept as int8 digit planes of ``bits`` bits.

    For a left operand with m digits, the products A_i @ B_j that share a shift i + j are one
    matrix product of [A_lo .. A_hi] (concatenated along K) with [B_(s-lo) .. B_(s-hi)] (stacked),
    so only m + n - 1 int32 results are combined instead of m * n.
    """

    def __init__(self, b: torch.Tensor, bits: int):
        depth, self.cols = b.shape
        self.bits = bits
        max_abs = b.abs().max().item() if b.numel() else 0.0
        self.n = digits_for(max_abs, bits)
        self.planes = split_digits(to_int(b, max_abs), self.n, bits)     # [n, K, N]
        # max over outputs of sum_K sum_j |digit_j| 2^(bits j): with the left operand's digit weight,
        # it bounds every partial sum of the combination (float64-exact when below 2^53).
        scale = torch.tensor([2.0 ** (bits * j) for j in range(self.n)], dtype=torch.float64).view(-1, 1, 1)
        self.digit_gain = (self.planes.double().abs() * scale).sum(dim=(0, 1)).max().item() if b.numel() else 0.0
        self._stacks: dict[tuple[int, int, int], torch.Tensor] = {}

    def _stack(self, s: int, lo: int, hi: int) -> torch.Tensor:
        key = (s, lo, hi)
        if key not in self._stacks:
            self._stacks[key] = torch.cat([self.planes[s - i] for i in range(lo, hi + 1)]).contiguous()
        return self._stacks[key]

    def rmatmul(self, a: torch.Tensor, max_abs: float, extra: float = 0.0) -> torch.Tensor:
        """``a``: int8 digits [M, m, K] (this matrix's ``bits``) of integers up to ``max_abs`` -> a @ b,
        integer-valued float64 [M, N].

        ``extra`` is the largest magnitude the caller will add afterwards (a bias): the float64
        combination is used only when every partial sum, and that, stays below 2^53; else int64.
        """
        rows, m, depth = a.shape
        if depth * min(m, self.n) > max_depth(self.bits):
            raise ValueError(f"inner dimension {depth * min(m, self.n)} would overflow int32 sums")
        in_float = digit_weight(max_abs) * self.digit_gain + extra < 2.0**53
        radix = 1 << self.bits
        acc = tmp = None
        for s in range(m + self.n - 2, -1, -1):  # Horner, highest shift first: acc = acc * radix + P_s
            lo, hi = max(0, s - self.n + 1), min(m - 1, s)
            p = torch._int_mm(a[:, lo:hi + 1].reshape(rows, (hi - lo + 1) * depth), self._stack(s, lo, hi))
            if acc is None:
                acc = p.to(torch.float64 if in_float else torch.int64)
            elif in_float:  # int32 -> float64 conversion is a fast copy; the mixed-dtype add_ is not
                tmp = torch.empty_like(acc) if tmp is None else tmp
                acc.mul_(float(radix)).add_(tmp.copy_(p))
            else:
                acc.mul_(radix).add_(p.to(torch.int64))
        return acc if in_float else acc.to(torch.float64)
