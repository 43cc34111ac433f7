"""int8 digit products: exactly the integer matrix product, whatever the digit counts."""
import pytest
import torch

from anfcodec import intmm

pytestmark = pytest.mark.skipif(not intmm.available(), reason="no int8 matrix product on this CPU build")


@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_digit_count_reaches_exactly_its_bound(n, bits):
    half = 2 ** (bits - 1)
    reach = sum((half - 1) * 2 ** (bits * i) for i in range(n))
    assert intmm.digits_for(reach, bits) == n
    assert intmm.digits_for(reach + 1, bits) == n + 1


@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("max_abs", [0, 1, 63, 64, 127, 128, 8127, 8128, 32639, 32640, 2**23, 2**31 + 5, 2**40])
def test_balanced_digits_rebuild_the_value_and_respect_the_weight_bound(max_abs, bits):
    g = torch.Generator().manual_seed(max_abs % 1000)
    v = torch.randint(-max_abs, max_abs + 1, (4096,), generator=g)
    edges = torch.tensor([max_abs, -max_abs, 0, 128, -128, 127, -129, 32896])
    v = torch.cat([v, edges[edges.abs() <= max_abs]])
    n = intmm.digits_for(max_abs, bits)
    d = intmm.split_digits(v.clone(), n, bits)
    assert d.dtype == torch.int8 and d.long().min() >= -2 ** (bits - 1) and d.long().max() < 2 ** (bits - 1)
    assert torch.equal(sum(d[i].long() * 2 ** (bits * i) for i in range(n)), v)
    weight = sum(d[i].double().abs() * 2.0 ** (bits * i) for i in range(n))
    assert weight.max().item() <= intmm.digit_weight(max_abs)


def test_the_probe_finds_exact_digits_here():
    # 8 on CPUs with VNNI or AMX; 7 where int8 pairs are summed in saturating 16 bits.
    assert intmm.digit_bits() in (7, 8)


@pytest.mark.parametrize("bits", [7, 8])
@pytest.mark.parametrize("a_max,b_max,depth", [(100, 100, 300), (2**15, 2**15, 700), (2**22, 2**17, 257),
                                               (2**30, 2**18, 16)])  # the last one combines in int64
def test_digit_product_equals_the_integer_product(a_max, b_max, depth, bits):
    if bits > intmm.digit_bits():
        pytest.skip(f"{bits}-bit digits are not exact on this CPU")
    g = torch.Generator().manual_seed(depth)
    a = torch.randint(-a_max, a_max + 1, (53, depth), generator=g)
    b = torch.randint(-b_max, b_max + 1, (depth, 37), generator=g)
    a[0, :] = a_max  # the worst-case row and column
    b[:, 0] = b_max
    m = intmm.digits_for(a_max, bits)
    digits = intmm.split_digits(a.clone(), m, bits).permute(1, 0, 2)  # [rows, m, K], as the convolution lays it out
    out = intmm.DigitMatrix(b.double(), bits).rmatmul(digits, float(a_max))
    assert out.dtype == torch.float64
    assert torch.equal(out.long(), a @ b)


def test_too_deep_products_are_refused_not_overflowed():
    depth = intmm.max_depth(7) + 1
    b = torch.full((depth, 1), 63.0, dtype=torch.float64)
    a = torch.full((1, 1, depth), 63, dtype=torch.int8)
    with pytest.raises(ValueError, match="overflow"):
        intmm.DigitMatrix(b, 7).rmatmul(a, 63.0)
