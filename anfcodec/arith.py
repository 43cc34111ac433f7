"""Exact integer matrix products for the fixed-point networks, and the one place that picks how.

The bit-exact networks (``exact``, ``int8net``) multiply integer activations by integer
weights. Every backend here returns the same integers, so which one runs never changes a
symbol or a pixel, only the speed, and that differs between CPUs by more than 100 times:

* ``int8``: each integer split into balanced int8 digits, ``torch._int_mm`` with exact int32
  sums. 200-900 GMAC/s with VNNI or AMX; 0.48 GMAC/s on an AVX2-only EPYC.
* ``float32``: the same digit planes held in float32. A float32 sum of integers is exact in any
  order while every partial sum stays below 2^24, so each plane product is cut along its inner
  dimension into chunks whose worst case stays below that; the chunks are added in float64.
  float32 GEMM is the fastest product most CPUs and every GPU have (TF32 is switched off).
* ``float64``: the integers themselves, exact below 2^53 (the callers check ``fan * max|a|``).
* ``conv32``: not a matrix product but a whole convolution: the same 8-bit digit planes (9-bit ones
  where that saves a plane, as for GDN's 16-bit squares) through
  PyTorch's float32 convolution (oneDNN's direct kernels on the CPU), with no unfold at all. Exact
  for the same reason as ``float32``, so ``lowering`` offers it only for layers whose every plane
  product stays below 2^24 without chunking (the int8 synthesis: every layer), and only on the
  CPU (cuDNN may pick FFT or Winograd algorithms, which do not sum the products themselves).
* ``winograd``: also a whole convolution, of 3x3 stride-1 layers (and 5x5 stride-2 ones, by
  space-to-depth into 3x3 over 4 C_in channels), in Winograd's F(2x2, 3x3) form
  over float64 integers: 16 products per 2x2 outputs instead of 36. Its transforms use only
  additions and, with the weight transform scaled by 4, integer coefficients, so every value stays
  an integer and the result (divided by 4, exactly) is the direct one wherever the transformed
  sums stay below 2^53 (``lowering.Product.winograd_exact``). Any device.

Digit planes that share a shift i + j are one product of [A_lo .. A_hi] (concatenated along the
inner dimension) with [B_(s-lo) .. B_(s-hi)] (stacked): m + n - 1 results, combined by Horner's
rule with exact shifts, instead of m * n.

``fastest(key, workload)`` picks for one kind of work at its first use, on a band of that work
itself (a synthetic convolution ranked them wrongly): every candidate runs it, must agree with
float64 exactly, and is timed; the fastest is kept for the process.
The choices persist in a small cache file per CPU model, torch build and ISA caps
(``~/.cache/anfcodec``), so a one-off command does not pay the measurement again: they only
ever decide speed, never integers. ``ANFCODEC_ARITH_CACHE=0`` turns that off, ``=DIR`` moves it.
``ANFCODEC_ARITH=int8|float32|float64|conv32|winograd`` forces one (tests and benchmarks). ``count_products`` lets a benchmark count the work without patching.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ENV = "ANFCODEC_ARITH"


def digits_for(max_abs: float, bits: int) -> int:
    """Balanced base-2^bits digits needed for every integer of magnitude <= max_abs (at least 1)."""
    half = 1 << bits - 1
    n, reach = 1, half - 1
    while max_abs > reach:
        n, reach = n + 1, (reach << bits) + half - 1
    return n


def split_digits(v: torch.Tensor, n: int, bits: int, dtype: torch.dtype = torch.int8) -> torch.Tensor:
    """Integer tensor -> digits [n, *v.shape] in [-2^(bits-1), 2^(bits-1)) with v = sum_i digit_i 2^(bits i).

    ``v`` must be an int32/int64 tensor whose values ``digits_for`` admits for ``n``; it is
    consumed (overwritten). The digits are stored as ``dtype`` (int8, or float32 planes)."""
    half = 1 << bits - 1
    out = torch.empty((n, *v.shape), dtype=dtype, device=v.device)
    for i in range(n - 1):
        d = (v + half).bitwise_and_((1 << bits) - 1).sub_(half)  # balanced digit
        out[i].copy_(d)
        v.sub_(d).bitwise_right_shift_(bits)                      # exact: v - d is a multiple of 2^bits
    out[n - 1].copy_(v)
    return out


def split_digits_float(x: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """``split_digits`` of a floating tensor of integers below 2^24, in float32 arithmetic: the same
    balanced digits (they are unique), as float32 planes [n, *x.shape]. Each step is exact: the high
    part ``floor((v + half) / radix)`` scales by a power of two, and the digit ``v - radix * high``
    is a small integer. On an AVX2 EPYC, 2.5 times faster than the integer shifts and masks."""
    radix, half = float(1 << bits), float(1 << bits - 1)
    out = torch.empty((n, *x.shape), dtype=torch.float32, device=x.device)
    v = x if x.dtype == torch.float32 else x.float()
    for i in range(n - 1):
        high = torch.add(v, half, out=out[n - 1] if i == 0 else None).mul_(1.0 / radix).floor_()
        torch.sub(v, high, alpha=radix, out=out[i])
        v = high
    if v is not out[n - 1]:
        out[n - 1].copy_(v)
    return out


def to_int(x: torch.Tensor, max_abs: float) -> torch.Tensor:
    """Integer-valued tensor -> int32, or int64 where values (plus a digit's offset in ``split_digits``)
    could leave int32 (a new tensor)."""
    dtype = torch.int32 if max_abs < 2**30 else torch.int64
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def digit_weight(max_abs: float) -> float:
    """A bound on sum_i |digit_i| * 2^(bits i) over the balanced digits of integers up to max_abs.

    Below the top digit t the digits reach at most r = 2^(bits-1) (2^(bits t) - 1) / (2^bits - 1)
    < 0.51 * 2^(bits t), in value and in weight; the top one carries |v| + r at most, and as it
    is nonzero, 2^(bits t) <= |v| + r, so 2^(bits t) < 2.05 |v|. In all, under 3.1 |v|:
    4 |v| + 256 is safe for digits of any width (one digit: |v| itself).
    """
    return 4.0 * max_abs + 256.0


# -- correctly rounded elementwise operations ---------------------------------------------------
def sqrt_(t: torch.Tensor) -> torch.Tensor:
    """In-place, correctly rounded square root of a float32 or float64 tensor; returns ``t``.

    IEEE 754 requires sqrt to be correctly rounded, but on the CPU ``torch.sqrt`` of a contiguous
    tensor goes through MKL's vector math (VML), which is accurate to about an ulp and dispatches by
    CPU: on an Intel AMX Xeon it rounds 66 of 4096 GDN norms differently from the true square root,
    and another 2500 differently again with MKL capped to SSE4.2. NumPy's sqrt is the hardware
    instruction (or libm's, also correctly rounded) on every CPU. On CUDA, torch's sqrt is the
    correctly rounded one.
    """
    if t.device.type == "cpu":
        a = t.numpy()
        np.sqrt(a, out=a)
        return t
    return t.sqrt_()


# -- counting hook -------------------------------------------------------------------------------
_COUNTERS: list[dict] = []


@contextlib.contextmanager
def count_products():
    """Count the exact products run inside the block: {"macs": integer MACs of the products as
    posed, "planes": MACs actually run on digit planes, by backend name}."""
    counts: dict = {"macs": 0, "planes": {}}
    _COUNTERS.append(counts)
    try:
        yield counts
    finally:
        _COUNTERS.remove(counts)


def note(backend: str, macs: int, plane_macs: int) -> None:
    """Count an exact product computed outside ``Operand`` (the int8 synthesis's GDN planes)."""
    if _COUNTERS:
        _count(backend, macs, plane_macs)


def _count(backend: str, macs: int, plane_macs: int) -> None:
    for c in _COUNTERS:
        c["macs"] += macs
        c["planes"][backend] = c["planes"].get(backend, 0) + plane_macs


# -- backends ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One exact way to multiply integer matrices: digits of ``bits`` bits (0: whole integers) stored
    as ``dtype``, multiplied with sums exact below ``sum_limit``."""
    name: str
    bits: int
    dtype: torch.dtype
    sum_limit: float

    def digit_count(self, max_abs: float) -> int:
        return 1 if self.bits == 0 else digits_for(max_abs, self.bits)

    def digit_bound(self, max_abs: float) -> float:
        """Largest |digit| of integers up to ``max_abs``."""
        return float(max_abs) if self.bits == 0 else float(min(1 << self.bits - 1, max_abs))

    def digits(self, x: torch.Tensor, max_abs: float) -> torch.Tensor:
        """Integer-valued tensor (float or int) with |x| <= max_abs -> contiguous digit planes [n, *x.shape]."""
        n = self.digit_count(max_abs)
        if n == 1 and (self.bits == 0 or not x.dtype.is_floating_point):
            return x.to(self.dtype).contiguous()[None]
        if self.dtype == torch.float32 and x.dtype.is_floating_point and max_abs < 2.0**24:
            return split_digits_float(x, n, self.bits)
        return split_digits(to_int(x, max_abs), n, self.bits, self.dtype)

    def plane_mm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.int8:
            return torch._int_mm(a, b)
        return a @ b

    def prepare(self, b: torch.Tensor) -> "Operand":
        return Operand(b, self)


INT8_7 = Backend("int8", 7, torch.int8, 2.0**31 - 1)   # where int8 pairs are summed in saturating 16 bits
INT8_8 = Backend("int8", 8, torch.int8, 2.0**31 - 1)
FLOAT32 = Backend("float32", 8, torch.float32, 2.0**24)
FLOAT64 = Backend("float64", 0, torch.float64, 2.0**53)
CONV32 = Backend("conv32", 8, torch.float32, 2.0**24)  # lowering.Product runs it (see the module docstring)
WINOGRAD = Backend("winograd", 0, torch.float64, 2.0**53)  # lowering.Product runs it too


class Operand:
    """A fixed right-hand operand ``b`` [K, N] (integer-valued) in one backend's digit planes.

    Each stacked product is cut along K into chunks whose worst case (the left digits' bound
    times the largest column sum of |b| in the chunk) stays below the backend's exact limit."""

    def __init__(self, b: torch.Tensor, backend: Backend):
        self.backend = backend
        self.depth, self.cols = b.shape
        self.b_max = b.abs().max().item() if b.numel() else 0.0
        self.n = backend.digit_count(self.b_max)
        self.planes = backend.digits(b, self.b_max)  # [n, K, N]
        # max over outputs of sum_K sum_j |digit_j| 2^(bits j): with the left operand's digit weight it
        # bounds every partial sum of the combination (exact in float64 below 2^53, else int64).
        radix = 2.0 ** backend.bits
        scale = torch.tensor([radix**j for j in range(self.n)], dtype=torch.float64, device=b.device).view(-1, 1, 1)
        self.digit_gain = (self.planes.double().abs() * scale).sum(dim=(0, 1)).max().item() if b.numel() else 0.0
        self._stacks: dict = {}

    def _stack(self, s: int, lo: int, hi: int, a_bound: float) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        key = (s, lo, hi)
        if key not in self._stacks:
            stack = torch.cat([self.planes[s - i] for i in range(lo, hi + 1)]).contiguous()
            total = stack.to(torch.float64, copy=True).abs_().sum(0).max().item() if stack.numel() else 0.0
            self._stacks[key] = stack, total, {}
        stack, total, chunks = self._stacks[key]
        if a_bound not in chunks:  # one chunk unless the worst case could leave the exact range
            limit = self.backend.sum_limit / max(a_bound, 1.0)
            chunks[a_bound] = [(0, stack.shape[0])] if total < limit else self._chunks(stack, limit)
        return stack, chunks[a_bound]

    @staticmethod
    def _chunks(stack: torch.Tensor, limit: float) -> list[tuple[int, int]]:
        """Inner-dimension ranges [c0, c1) whose worst-case sums (per column, below ``limit``) stay
        exact (greedy, binary search)."""
        depth = stack.shape[0]
        cum = torch.cat([stack.new_zeros(1, stack.shape[1], dtype=torch.float64),
                         stack.double().abs().cumsum(0)])
        chunks, c0 = [], 0
        while c0 < depth:
            lo, hi = c0 + 1, depth  # the largest c1 with max_n (cum[c1] - cum[c0]) < limit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if (cum[mid] - cum[c0]).max().item() < limit:
                    lo = mid
                else:
                    hi = mid - 1
            chunks.append((c0, lo))
            c0 = lo
        return chunks

    def rmatmul(self, a: torch.Tensor, max_abs: float, extra: float = 0.0) -> torch.Tensor:
        """``a``: digit planes [M, m, K] (``backend.digits`` of integers up to ``max_abs``, planes moved
        to dim 1) -> a @ b, integer-valued float64 [M, N].

        ``extra`` is the largest magnitude the caller will add afterwards (a bias): the combination
        runs in float64 only when every partial sum, and that, stays below 2^53; else in int64."""
        be = self.backend
        rows, m, depth = a.shape
        in_float = be.bits == 0 or digit_weight(max_abs) * self.digit_gain + extra < 2.0**53
        a_bound = be.digit_bound(max_abs)
        radix = 1 << be.bits
        acc = None
        plane_macs = 0
        for s in range(m + self.n - 2, -1, -1):  # Horner, highest shift first: acc = acc * radix + P_s
            lo, hi = max(0, s - self.n + 1), min(m - 1, s)
            stack, chunks = self._stack(s, lo, hi, a_bound)
            flat = a[:, lo:hi + 1].reshape(rows, (hi - lo + 1) * depth)
            (c0, c1), *rest = chunks
            p = be.plane_mm(flat[:, c0:c1], stack[c0:c1])
            if rest:  # chunk sums are exact in the backend's type; their total is not, so add them wide
                p = p.to(torch.float64 if in_float else torch.int64)
                for c0, c1 in rest:
                    p += be.plane_mm(flat[:, c0:c1], stack[c0:c1]).to(p.dtype)
            plane_macs += rows * flat.shape[1] * self.cols
            if acc is None:
                acc = p.to(torch.float64 if in_float else torch.int64)
            elif in_float:
                acc.mul_(float(radix)).add_(p.to(torch.float64))
            else:
                acc.mul_(radix).add_(p.to(torch.int64))
        if _COUNTERS:
            _count(be.name, rows * depth * self.cols, plane_macs)
        return acc if acc.dtype == torch.float64 else acc.to(torch.float64)


# -- choice by measurement -------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _int8_backend(device: str) -> Backend | None:
    """The int8 digit width whose ``torch._int_mm`` is exact here (8, else 7), or None (off the CPU,
    ``_int_mm`` has shape rules of its own).

    CPUs without VNNI (and oneDNN capped below it) multiply int8 pairs with vpmaddubsw, whose
    pairwise sums saturate at 2^15: full-range digits then come out wrong, 7-bit ones stay exact.
    The probe puts the extreme digits side by side, where saturation shows."""
    if device != "cpu" or not hasattr(torch, "_int_mm"):
        return None
    for be in (INT8_8, INT8_7):
        half = 1 << be.bits - 1
        g = torch.Generator().manual_seed(be.bits)
        try:
            ok = True
            for rows, depth, cols in ((17, 64, 8), (200, 576, 64), (64, 2304, 48), (33, 27, 16)):
                a = torch.randint(-half, half, (rows, depth), generator=g, dtype=torch.int8)
                b = torch.randint(-half, half, (depth, cols), generator=g, dtype=torch.int8)
                a[::2] = -half
                a[1::4] = half - 1
                b[:, ::2] = -half
                b[:, 1::4] = half - 1
                ok = ok and torch.equal(torch._int_mm(a, b).long(), a.long() @ b.long())
        except (RuntimeError, NotImplementedError):
            return None
        if ok:
            return be
    return None


def candidates(device: str = "cpu") -> list[Backend]:
    """Every exact backend this device has."""
    int8 = _int8_backend(device)
    return ([int8] if int8 else []) + [FLOAT32, FLOAT64]


def backends(device: str = "cpu") -> list[Backend]:
    """Every exact backend this device has: the matrix products, the Winograd form and, on the CPU,
    ``conv32``."""
    return candidates(device) + ([CONV32] if device == "cpu" else []) + [WINOGRAD]


def magnitude_class(max_abs: float) -> int:
    """The classes of operand magnitude a choice is made for: the 8-bit digits needed (the int8
    synthesis: 1, its wide inputs: 2, the entropy parameters and the fine synthesis: 2-4)."""
    return digits_for(max_abs, 8)


def _time(fn, budget_s: float, runs: int = 2) -> float:
    """Best of a few runs of ``fn`` within about ``budget_s`` (at least ``runs``)."""
    best, spent, done = math.inf, 0.0, 0
    while done < runs or (spent < budget_s and done < 4):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, done = min(best, dt), spent + dt, done + 1
    return best


_MADE: dict[tuple, Backend] = {}
_FORCED: list[str] = []
CACHE_ENV = "ANFCODEC_ARITH_CACHE"
# Raised when the code changes what the candidates cost, so that older measurements are not reused
# (2: session 20, whose float32 results of conv32 and context lattices change what each costs;
# 3-5: session 22, conv32 with 9-bit digits and float32 two-plane results; bands of least work).
CHOICE_REVISION = 5
_SPEED_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def _cpu_identity() -> str:
    """The CPU model and instruction-set flags (Linux), else what ``platform`` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        pick = [next(x for x in lines if x.startswith(k)) for k in ("model name", "flags")]
        return "\n".join(pick)
    except (OSError, StopIteration):
        import platform
        return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def cache_path() -> Path | None:
    """The choice cache of this CPU, torch build and ISA caps (None: caching is off)."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting == "0":
        return None
    ident = json.dumps([_cpu_identity(), torch.__version__, torch.backends.cpu.get_cpu_capability(),
                        {k: os.environ.get(k) for k in _SPEED_ENV}, CHOICE_REVISION])
    base = Path(setting) if setting else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anfcodec"
    return base / f"arith-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"


def _cache_key(key: tuple) -> str:
    return json.dumps([str(k) for k in key])


def _cached() -> dict[str, str]:
    path = cache_path()
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def _remember(key: tuple, be: Backend) -> None:
    """Add a measured choice to the cache file (merged with what other processes wrote; any
    failure to write only means the next process measures again)."""
    path = cache_path()
    if path is None:
        return
    try:
        entries = {**_cached(), _cache_key(key): be.name}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=0))
        os.replace(tmp, path)
    except OSError:
        pass


@contextlib.contextmanager
def force(name: str):
    """Use backend ``name`` for every choice made inside the block (tests, benchmarks)."""
    _FORCED.append(name)
    try:
        yield
    finally:
        _FORCED.pop()


SAMPLES = (64, 4096)  # output rows of the two timing stages: a glance, then a representative band
# Least work (MACs) of the timed band, for light rows (``row_macs``): 4096 rows of GDN's 64x64 product
# are 17 M MACs, where fixed costs ranked float64 first, while on whole strips the float32 planes
# were 12% faster for the whole int8 synthesis (AVX2 EPYC, 2 threads, session 22).
BAND_MACS = 1 << 28
MIN_ROWS = 1024       # work smaller than this does not decide (float64 meanwhile)


def fastest(key: tuple, workload, device: str = "cpu", rows: int = SAMPLES[1], budget_s: float = 0.015,
            cands: list[Backend] | None = None, row_macs: int = 0) -> Backend:
    """The fastest backend for ``workload(backend, rows) -> tensor``: that many output rows (of the
    product's M) of the caller's own work, of which it has ``rows``; measured once per process per
    ``key`` and thread count. Work of fewer than ``MIN_ROWS`` rows (a thumbnail, a warm-up, the
    checkerboard context's lattices) takes the choice already made for its key, and where there is
    none runs in float64, leaving the choice to the first piece of real work, where it is
    representative.

    First every candidate runs a 64-row glance twice (the first run pays one-time preparation) and
    must return exactly what float64 returns: exact by construction, so a candidate that does not
    is a broken kernel and is dropped. Candidates more than 8 times slower than the best there are
    not timed further (the int8 units of an AVX2-only CPU ran at 0.48 GMAC/s: timing them on a
    full band would cost seconds). The rest are timed on 4096 rows, or on as many as make
    ``BAND_MACS`` of work where a row costs ``row_macs``, best of a few runs.
    ``cands`` are the backends that can run this work (default: the matrix products, ``candidates``).
    ``ANFCODEC_ARITH`` (or ``force``) names the backend instead; work the forced backend cannot run
    (a shallow layer for the matrix backends, one too wide for ``conv32``) runs in float64."""
    forced = _FORCED[-1] if _FORCED else os.environ.get(ENV)
    key = (*key, device, torch.get_num_threads(), forced)
    if key in _MADE:
        return _MADE[key]
    cands = list(candidates(device) if cands is None else cands)
    if forced:
        match = [be for be in cands if be.name == forced]
        if not match and forced in {be.name for be in backends(device)}:
            match = [FLOAT64]
        if not match:
            raise RuntimeError(f"{ENV}={forced}: not an exact backend on {device} "
                               f"(have: {', '.join(be.name for be in backends(device))})")
        _MADE[key] = match[0]
        return match[0]
    known = _cached().get(_cache_key(key)) if device == "cpu" else None
    match = [be for be in cands if be.name == known]
    if match:
        _MADE[key] = match[0]
        return match[0]
    if rows < MIN_ROWS:
        return FLOAT64
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would round the float32 planes
    glance, want = {}, None
    for be in reversed(cands):  # float64 first: the reference
        out = workload(be, SAMPLES[0])
        if want is None:
            want = out
        elif not torch.equal(out, want):
            cands.remove(be)
            continue
        glance[be] = _time(lambda: workload(be, SAMPLES[0]), 0.0, runs=1)
    quick = min(glance[be] for be in cands)
    cands = [be for be in cands if glance[be] <= 8 * quick]
    band = min(rows, max(SAMPLES[1], BAND_MACS // max(row_macs, 1)))
    times = {be: _time(lambda: workload(be, band), budget_s) for be in cands} if len(cands) > 1 else glance
    _MADE[key] = min(cands, key=times.get)
    if device == "cpu":
        _remember(key, _MADE[key])
    return _MADE[key]


def describe(be: Backend) -> str:
    return be.name + (f" ({be.bits}-bit digits)" if be.bits else "")


def chosen() -> dict[str, str]:
    """The choices made so far in this process: what they were made for -> backend."""
    return {" ".join(map(str, key[:-1])): describe(be) for key, be in _MADE.items()}
