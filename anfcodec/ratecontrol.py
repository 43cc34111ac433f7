"""Rate control: find the quality that meets a target size or PSNR, by bisection.

Quality is continuous (stored in 1/256 steps), and file size and PSNR grow
with it, so a bisection over the representable qualities in [1, Q] (1793
for Q = 8, 2305 for Q = 10) needs about 11 trials. The quality-independent
analysis transform runs once; each trial only re-quantizes and entropy-codes
(and, for a PSNR target, decodes).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import container as fmt

K_LO = 1 * fmt.QUALITY_SCALE
BPP_TOLERANCE, PSNR_TOLERANCE = 0.03, 0.1


def top_step(num_qualities: int) -> int:
    """The highest quality step of a model with qualities 1..num_qualities."""
    return num_qualities * fmt.QUALITY_SCALE


class TargetError(ValueError):
    """A hard target (--max-bytes) cannot be met with this model."""


@dataclass
class RateReport:
    quality: float
    bytes: int
    bpp: float
    psnr: float | None
    trials: int
    met: bool
    note: str = ""

    def describe(self) -> str:
        p = f", {self.psnr:.2f} dB" if self.psnr is not None else ""
        return (f"quality {self.quality:.4g}: {self.bytes} bytes, {self.bpp:.4f} bpp{p} after {self.trials} trials"
                + (f"; {self.note}" if self.note else ""))


def last_at_most(f, target: float, k_hi: int) -> int | None:
    """Largest k in [K_LO, k_hi] with f(k) <= target, f non-decreasing; None if f(K_LO) > target."""
    if f(K_LO) > target:
        return None
    if f(k_hi) <= target:
        return k_hi
    lo, hi = K_LO, k_hi                      # f(lo) <= target < f(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if f(mid) <= target else (lo, mid)
    return lo


def first_at_least(f, target: float, k_hi: int) -> int | None:
    """Smallest k in [K_LO, k_hi] with f(k) >= target, f non-decreasing; None if f(k_hi) < target."""
    if f(k_hi) < target:
        return None
    if f(K_LO) >= target:
        return K_LO
    lo, hi = K_LO, k_hi                      # f(lo) < target <= f(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if f(mid) >= target else (mid, hi)
    return hi


def search(trial, pixels: int, k_hi: int, target_bpp: float | None = None, max_bytes: int | None = None,
           target_psnr: float | None = None) -> tuple[int, str, bool]:
    """Pick the quality step k in [K_LO, k_hi] for exactly one target. ``trial(k) -> (bytes, psnr or None)``,
    cached by the caller.

    Returns (k, note, met).
    """
    size = lambda k: trial(k)[0]
    if max_bytes is not None:
        k = last_at_most(size, max_bytes, k_hi)
        if k is None:
            raise TargetError(f"cannot fit in {max_bytes} bytes: even quality 1 needs {size(K_LO)} bytes")
        return k, "", True
    if target_bpp is not None:
        target = target_bpp * pixels / 8
        k = last_at_most(size, target, k_hi)
        if k is None:
            return K_LO, f"target {target_bpp} bpp is below the lowest quality's {8 * size(K_LO) / pixels:.4f} bpp", False
        if k < k_hi and abs(size(k + 1) - target) < abs(size(k) - target):
            k += 1
        met = abs(size(k) - target) <= BPP_TOLERANCE * target
        note = "" if met else f"target {target_bpp} bpp is above the highest quality's {8 * size(k_hi) / pixels:.4f} bpp"
        return k, note, met
    if target_psnr is not None:
        quality = lambda k: trial(k)[1]
        k = first_at_least(quality, target_psnr, k_hi)
        if k is None:
            return k_hi, f"target {target_psnr} dB is above the highest quality's {quality(k_hi):.2f} dB", False
        met = abs(quality(k) - target_psnr) <= PSNR_TOLERANCE or k == K_LO
        note = "" if abs(quality(k) - target_psnr) <= PSNR_TOLERANCE else \
            f"the lowest quality already gives {quality(k):.2f} dB"
        return k, note, met
    raise ValueError("no target given")
