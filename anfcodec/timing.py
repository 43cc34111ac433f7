"""Opt-in wall-time accounting per phase (model, entropy coding, I/O) for the speed benchmark.

``with phase("model"): ...`` costs one global lookup when nothing is recording;
``with record() as totals:`` collects seconds per phase name.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

_totals: dict[str, float] | None = None


@contextmanager
def phase(name: str):
    if _totals is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        _totals[name] += time.perf_counter() - start


@contextmanager
def record():
    global _totals
    _totals = defaultdict(float)
    try:
        yield _totals
    finally:
        _totals = None
