"""Exact integer products: every backend gives exactly the integer product, and the choice is
made once, by measurement, or forced."""
import os
from fractions import Fraction

import pytest
import torch

from anfcodec import arith


@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_digit_count_reaches_exactly_its_bound(n, bits):
    half = 2 ** (bits - 1)
    reach = sum((half - 1) * 2 ** (bits * i) for i in range(n))
    assert arith.digits_for(reach, bits) == n
    assert arith.digits_for(reach + 1, bits) == n + 1


@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("max_abs", [0, 1, 63, 64, 127, 128, 8127, 8128, 32639, 32640, 2**23, 2**31 + 5, 2**40])
def test_balanced_digits_rebuild_the_value_and_respect_the_weight_bound(max_abs, bits):
    g = torch.Generator().manual_seed(max_abs % 1000)
    v = torch.randint(-max_abs, max_abs + 1, (4096,), generator=g)
    edges = torch.tensor([max_abs, -max_abs, 0, 128, -128, 127, -129, 32896])
    v = torch.cat([v, edges[edges.abs() <= max_abs]])
    n = arith.digits_for(max_abs, bits)
    d = arith.split_digits(v.clone(), n, bits)
    assert d.dtype == torch.int8 and d.long().min() >= -2 ** (bits - 1) and d.long().max() < 2 ** (bits - 1)
    assert torch.equal(sum(d[i].long() * 2 ** (bits * i) for i in range(n)), v)
    weight = sum(d[i].double().abs() * 2.0 ** (bits * i) for i in range(n))
    assert weight.max().item() <= arith.digit_weight(max_abs)


def test_every_cpu_has_the_float_backends_and_int8_only_where_its_digits_are_exact():
    names = [be.name for be in arith.candidates()]
    assert names[-2:] == ["float32", "float64"]
    if names[0] == "int8":  # 8-bit digits with VNNI/AMX; 7-bit where int8 pairs saturate at 2^15
        assert arith.candidates()[0].bits in (7, 8)


BACKENDS = [arith.INT8_7, arith.INT8_8, arith.FLOAT32, arith.FLOAT64]


@pytest.mark.parametrize("be", BACKENDS, ids=lambda be: f"{be.name}{be.bits or ''}")
@pytest.mark.parametrize("a_max,b_max,depth", [(127, 127, 3200), (32639, 127, 6400), (100, 100, 300),
                                               (2**15, 2**15, 700), (2**22, 2**17, 257),
                                               (2**30, 2**18, 16)])  # the last one combines in int64
def test_every_backend_gives_the_integer_product(be, a_max, b_max, depth):
    """The backend-agreement test: the same integers from every backend, including products whose
    float32 planes must be cut into chunks (127 x 127 over K = 3200 exceeds 2^24 at full range)."""
    if be.name == "int8" and be not in arith.candidates():
        if be.bits == 8 or not any(c.name == "int8" for c in arith.candidates()):
            pytest.skip(f"{be.bits}-bit int8 digits are not exact on this CPU")
    g = torch.Generator().manual_seed(depth)
    a = torch.randint(-a_max, a_max + 1, (53, depth), generator=g)
    b = torch.randint(-b_max, b_max + 1, (depth, 37), generator=g)
    a[0, :] = a_max  # the worst-case row and column
    b[:, 0] = b_max
    digits = be.digits(a.clone(), a_max).permute(1, 0, 2)  # [rows, m, K], as the convolution lays it out
    out = be.prepare(b.double()).rmatmul(digits, float(a_max))
    assert out.dtype == torch.float64
    assert torch.equal(out.long(), a @ b)


def test_float32_chunks_keep_every_partial_sum_below_2_to_the_24():
    b = torch.full((3200, 4), 127.0, dtype=torch.float64)
    operand = arith.FLOAT32.prepare(b)
    _, chunks = operand._stack(0, 0, 0, 128.0)
    assert len(chunks) > 1 and chunks[0][0] == 0 and chunks[-1][1] == 3200
    assert all(128 * 127 * (c1 - c0) < 2**24 for c0, c1 in chunks)


def test_the_choice_is_made_once_and_can_be_forced(monkeypatch):
    calls = []

    def workload(be, rows):
        calls.append(be.name)
        return torch.ones(3)
    first = arith.fastest(("test-choice",), workload)
    n = len(calls)
    assert first in arith.candidates() and n >= len(arith.candidates())
    assert arith.fastest(("test-choice",), workload) is first and len(calls) == n
    assert arith.fastest(("test-small",), workload, rows=arith.MIN_ROWS - 1) is arith.FLOAT64
    assert not any(k[0] == "test-small" for k in arith._MADE)  # a thumbnail does not decide
    with arith.force("float64"):
        assert arith.fastest(("test-choice",), workload) is arith.FLOAT64
    monkeypatch.setenv(arith.ENV, "float32")
    assert arith.fastest(("test-choice",), workload) is arith.FLOAT32
    monkeypatch.setenv(arith.ENV, "nonesuch")
    with pytest.raises(RuntimeError, match="not an exact backend"):
        arith.fastest(("test-choice",), workload)


def test_a_backend_that_disagrees_with_float64_is_never_chosen():
    def workload(be, rows):
        return torch.zeros(2) if be is arith.FLOAT64 else torch.ones(2)  # everyone else "broken"
    assert arith.fastest(("test-broken",), workload) is arith.FLOAT64


def test_products_are_counted_per_backend():
    b = torch.randint(-100, 100, (64, 8)).double()
    a = torch.randint(-100, 100, (10, 64))
    with arith.count_products() as counts:
        arith.FLOAT32.prepare(b).rmatmul(arith.FLOAT32.digits(a, 100).permute(1, 0, 2), 100.0)
    assert counts["macs"] == 10 * 64 * 8 and counts["planes"] == {"float32": 10 * 64 * 8}


def _correctly_rounded_sqrt(x: float, r: float, below: float, above: float) -> bool:
    """r is sqrt(x) rounded to nearest: x lies between the squares of the midpoints from r to its
    neighbours ``below`` and ``above`` (exact rationals)."""
    x, r = Fraction(x), Fraction(r)
    return ((r + Fraction(below)) / 2) ** 2 < x < ((r + Fraction(above)) / 2) ** 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sqrt_is_correctly_rounded_where_torch_sqrt_need_not_be(dtype):
    # torch.sqrt on a contiguous CPU tensor runs MKL's vector math: on an Intel AMX Xeon it rounds
    # about 1.6% of float32 GDN norms away from the true square root, differently again with MKL
    # capped to SSE4.2, and a kept int8 file decoded 5 samples apart on two CPUs from one such ulp.
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20000, generator=g, dtype=torch.float64).mul_(8).exp_().to(dtype)  # 1 .. 3000
    r = arith.sqrt_(x.clone())
    below = torch.nextafter(r, torch.zeros_like(r)).tolist()
    above = torch.nextafter(r, torch.full_like(r, float("inf"))).tolist()
    wrong = [i for i, v in enumerate(zip(x.tolist(), r.tolist(), below, above)) if not _correctly_rounded_sqrt(*v)]
    assert not wrong, f"{len(wrong)} of {x.numel()} square roots not correctly rounded"
    assert r.dtype == dtype


def test_a_measured_choice_persists_for_the_next_process(monkeypatch, tmp_path):
    monkeypatch.setenv(arith.CACHE_ENV, str(tmp_path))
    arith.cache_path.cache_clear()
    calls = []

    def workload(be, rows):
        calls.append(be.name)
        return torch.ones(3)
    try:
        first = arith.fastest(("test-persist",), workload)
        assert calls and arith.cache_path().parent == tmp_path and arith.cache_path().exists()
        arith._MADE.clear()                           # as a new process would start
        calls.clear()
        assert arith.fastest(("test-persist",), workload) is first and not calls
        other = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2" else "AVX2"  # caps differing from this run's
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", other)   # other ISA caps: another file, measured again
        arith.cache_path.cache_clear()
        arith._MADE.clear()
        arith.fastest(("test-persist",), workload)
        assert calls and len(list(tmp_path.glob("arith-*.json"))) == 2
        monkeypatch.setenv(arith.CACHE_ENV, "0")
        arith.cache_path.cache_clear()
        assert arith.cache_path() is None
    finally:
        arith.cache_path.cache_clear()
        arith._MADE.clear()
