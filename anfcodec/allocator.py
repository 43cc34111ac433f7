"""How the process's C allocator treats the codec's large temporaries (Linux glibc).

A convolution's output at 768x512 is 6-50 MB, and every layer allocates and frees a few. glibc's
malloc serves blocks above its mmap threshold (128 KiB at first, rising only as such blocks are
freed) with fresh pages, and returns heap space above its trim threshold to the kernel on free:
either way the next layer's block is faulted in again, page by page, and zeroed by the kernel.
On the AVX2 EPYC that was a third of the analysis transform (0.34 s, 0.22 s with the blocks
kept; ``bench/encode_stages.py``). ``keep_freed_blocks`` raises the mmap threshold to glibc's
ceiling (32 MiB; larger blocks still come from and go back to the kernel) and the trim threshold
to 1 GiB, so that freed blocks are reused where they lie. Peak memory is unchanged; the process
keeps up to that much of its high-water mark. Setting only the trim threshold is worse than
nothing: it also freezes the mmap threshold at 128 KiB (the refinement then took 1.8 s, not 0.8).

Elsewhere (macOS, Windows, musl) and with ``ANFCODEC_MALLOC=0`` it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "ANFCODEC_MALLOC"
M_TRIM_THRESHOLD = -1   # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def keep_freed_blocks() -> bool:
    """Set both thresholds once per process; whether they are in effect."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux") and os.environ.get(ENV, "1") != "0":
            try:
                libc = ctypes.CDLL(None)
                libc.gnu_get_libc_version  # glibc only: musl's mallopt accepts and ignores these
                _applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) \
                    and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                pass
    return _applied
