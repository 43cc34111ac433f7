"""The shared lowering: operations of a network, sub-pixel form, and the strip loop of exact products."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anfcodec import arith, lowering
from anfcodec.entropy_models import GDN
from anfcodec.lowering import Conv, Product, abs_max, conv_strips, lower, subpixel_kernel


@pytest.mark.parametrize("kernel,stride,padding,output_padding", [(5, 2, 2, 1), (16, 16, 0, 0), (3, 2, 1, 1), (4, 2, 1, 0)])
def test_subpixel_form_equals_transposed_convolution(kernel, stride, padding, output_padding):
    g = torch.Generator().manual_seed(kernel)
    w = torch.randint(-50, 50, (6, 5, kernel, kernel), generator=g).double()
    a = torch.randint(-50, 50, (1, 6, 7, 9), generator=g).double()
    ref = F.conv_transpose2d(a, w, stride=stride, padding=padding, output_padding=output_padding)
    k, before, after = subpixel_kernel(w, stride, padding)
    out = F.pixel_shuffle(F.conv2d(F.pad(a, (before, after, before, after)), k), stride)
    assert torch.equal(out, ref)


def test_lowering_gives_one_operation_per_layer():
    net = nn.Sequential(nn.Conv2d(3, 8, 5, 2, 2), GDN(8), nn.ConvTranspose2d(8, 4, 5, 2, 2, 1),
                        GDN(4, inverse=True), nn.LeakyReLU(0.1))
    ops = lower(net)
    assert [type(op).__name__ for op in ops] == ["Conv", "GDN", "Conv", "GDN", "LeakyReLU"]
    assert (ops[0].stride, ops[0].pad, ops[0].shuffle) == (2, (2, 2), 1)
    assert ops[2].shuffle == 2 and ops[2].weight.shape[0] == 4 * 4 and ops[2].channels == 4
    assert not ops[1].inverse and ops[3].inverse and ops[4].slope == 0.1
    # Per output channel of the layer as trained, whatever its sub-pixel phases hold.
    trained = net[2].weight.detach().double().abs().amax(dim=(0, 2, 3))
    assert torch.equal(torch.from_numpy(ops[2].output_scale_groups()), trained)


def test_layers_without_an_exact_form_are_refused():
    with pytest.raises(TypeError, match="stride"):
        lower(nn.ConvTranspose2d(4, 4, 3, 2, 0))  # 7 -> 15 samples: not n -> 2n
    with pytest.raises(TypeError, match="grouped"):
        lower(nn.Conv2d(4, 4, 3, 1, 1, groups=2))
    with pytest.raises(TypeError, match="ReLU"):
        lower(nn.Sequential(nn.ReLU()))


def _strips(a: torch.Tensor, w: torch.Tensor, b, stride: int, pad, shuffle: int = 1) -> torch.Tensor:
    """conv_strips on NCHW ``a``, returned NCHW."""
    x = a.permute(0, 2, 3, 1).contiguous()
    out = conv_strips(x, Product(w, b, stride, "test"), pad, abs_max(x), shuffle)
    return out.permute(0, 3, 1, 2)


def _one_row_strips(monkeypatch) -> None:
    monkeypatch.setattr(lowering, "FLOAT64_STRIP_BYTES", 1)
    monkeypatch.setattr(lowering, "DIGIT_STRIP_BYTES", 1)


@pytest.mark.parametrize("stride,pad", [(1, (1, 1)), (2, (2, 2)), (1, (2, 1))])
def test_strips_equal_one_convolution(monkeypatch, stride, pad):
    g = torch.Generator().manual_seed(stride)
    a = torch.randint(-99, 99, (1, 4, 37, 29), generator=g).double()
    w = torch.randint(-99, 99, (6, 4, 5 if stride == 2 else 3, 5 if stride == 2 else 3), generator=g).double()
    b = torch.randint(-99, 99, (6,), generator=g).double()
    whole = F.conv2d(F.pad(a, (pad[0], pad[1], pad[0], pad[1])), w, b, stride=stride)
    _one_row_strips(monkeypatch)
    assert torch.equal(_strips(a, w, b, stride, pad), whole)


def test_strips_with_pixel_shuffle_equal_one_call(monkeypatch):
    g = torch.Generator().manual_seed(7)
    a = torch.randint(-99, 99, (1, 3, 11, 13), generator=g).double()
    w = torch.randint(-99, 99, (8, 3, 3, 3), generator=g).double()
    whole = F.pixel_shuffle(F.conv2d(F.pad(a, (1, 1, 1, 1)), w), 2)
    _one_row_strips(monkeypatch)
    assert torch.equal(_strips(a, w, None, 1, (1, 1), shuffle=2), whole)


@pytest.mark.parametrize("one_row", [True, False])
@pytest.mark.parametrize("shuffle", [1, 2])
@pytest.mark.parametrize("a_max,w_max", [(2**20, 2**16), (127, 127), (1024, 1000), (32639, 127)])
def test_narrow_layers_equal_one_convolution(monkeypatch, one_row, shuffle, a_max, w_max):
    # Few output channels take the tap-product form; it must equal conv2d exactly, in strips or whole.
    # 127 x 127: float32 taps (every partial sum below 2^24); 1024 x 1000 crosses 2^24 at the worst
    # case and must take float64, 2^20 x 2^16 too; 32639 x 127 (16-bit inputs, g_s1's last layer)
    # crosses it too, but its two 8-bit digit planes do not: float32 planes, combined in float64.
    g = torch.Generator().manual_seed(shuffle)
    a = torch.randint(-a_max, a_max + 1, (2, 16, 13, 11), generator=g).double()
    w = torch.randint(-w_max, w_max + 1, (4, 16, 3, 3), generator=g).double()
    a[0, :, 0, 0], w[0] = a_max, w_max   # the worst case is reached
    b = torch.randint(-99, 99, (4,), generator=g).double()
    assert Product(w, b, 1, "test").narrow
    whole = F.conv2d(F.pad(a, (1, 1, 1, 1)), w, b)
    whole = F.pixel_shuffle(whole, shuffle) if shuffle > 1 else whole
    if one_row:
        _one_row_strips(monkeypatch)
    assert torch.equal(_strips(a, w, b, 1, (1, 1), shuffle=shuffle), whole)


@pytest.mark.parametrize("backend", [be.name for be in arith.backends()])
@pytest.mark.parametrize("stride,shuffle,strip_bytes", [(1, 1, 1), (2, 1, 64 << 20), (1, 2, 1 << 16)])
def test_deep_convolutions_in_every_backend_equal_float64(monkeypatch, stride, shuffle, strip_bytes, backend):
    # C_in * k^2 = 288 takes the backend's products; values span 2-3 digits, as the synthesis' do.
    monkeypatch.setenv(arith.ENV, backend)
    g = torch.Generator().manual_seed(stride * 10 + shuffle)
    a = torch.randint(-2**16, 2**16, (1, 32, 19, 23), generator=g).double()
    w = torch.randint(-2**17, 2**17, (16, 32, 3, 3), generator=g).double()
    b = torch.randint(-2**20, 2**20, (16,), generator=g).double()
    product = Product(w, b, stride, "test")
    runs = "float64" if backend == "winograd" and stride != 1 else backend  # Winograd: stride 1 only
    assert product.backend(a.permute(0, 2, 3, 1).contiguous(), 2**16, (1, 1)).name == runs
    whole = F.conv2d(F.pad(a, (1, 1, 1, 1)), w, b, stride=stride)
    whole = F.pixel_shuffle(whole, shuffle) if shuffle > 1 else whole
    monkeypatch.setattr(lowering, "DIGIT_STRIP_BYTES", strip_bytes)
    assert torch.equal(_strips(a, w, b, stride, (1, 1), shuffle=shuffle), whole)


@pytest.mark.parametrize("k,stride", [(3, 1), (5, 2)])
@pytest.mark.parametrize("strip_bytes", [1, 8 << 20])
@pytest.mark.parametrize("height,width,batch", [(19, 23, 1), (8, 6, 2), (1, 1, 1)])
def test_winograd_equals_the_direct_convolution_on_odd_edges_and_strips(monkeypatch, strip_bytes, height, width,
                                                                        batch, k, stride):
    # Odd output sizes take a zero row / column of tiles, 1-byte budgets strips of 2 rows; 5x5
    # stride-2 layers run as 3x3 convolutions of 2x2 blocks. The values reach the bound's order
    # (2^22 x 2^17, 3x3x32 taps) and must still come out exact.
    monkeypatch.setenv(arith.ENV, "winograd")
    monkeypatch.setattr(lowering, "WINOGRAD_STRIP_BYTES", strip_bytes)
    g = torch.Generator().manual_seed(height)
    a = torch.randint(-2**22, 2**22, (batch, 32, height, width), generator=g).double()
    w = torch.randint(-2**17 // stride**2, 2**17 // stride**2, (24, 32, k, k), generator=g).double()
    b = torch.randint(-2**20, 2**20, (24,), generator=g).double()
    a[0, :, 0, 0], w[0] = 2**22, 2**17 // stride**2 - 1
    p = k // 2
    product = Product(w, b, stride, "test")
    assert product.winograd_exact(2**22)
    assert product.backend(a.permute(0, 2, 3, 1).contiguous(), 2**22, (p, p)) is arith.WINOGRAD
    assert torch.equal(_strips(a, w, b, stride, (p, p)), F.conv2d(F.pad(a, (p, p, p, p)), w, b, stride=stride))


def test_winograd_is_offered_only_where_its_transformed_sums_stay_below_2_to_53():
    w = torch.full((8, 64, 3, 3), 2.0**17)
    product = Product(w, None, 1, "test")
    gain = lowering.winograd_weights(w).abs().sum(dim=1).max().item()
    assert gain == 64 * 9 * 2**17  # tile position (1, 1): G's row (1, 1, 1) on both axes
    limit = 2.0**53 / (36 * gain)
    assert product.winograd_exact(limit * 0.99) and not product.winograd_exact(limit)
    assert not Product(torch.ones(8, 64, 5, 5), None, 1, "test").winograd_exact(1.0)   # 3x3, or 5x5 stride 2
    assert not Product(torch.ones(8, 64, 3, 3), None, 2, "test").winograd_exact(1.0)
    assert Product(torch.ones(8, 64, 5, 5), None, 2, "test").winograd_exact(1.0)


def test_integer_inputs_of_any_dtype_give_the_same_products():
    # The int8 synthesis feeds int8 / int32 inputs, the fine grid float64: one product either way.
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-127, 128, (1, 9, 10, 40), generator=g)
    w = torch.randint(-127, 128, (16, 40, 3, 3), generator=g).double()
    product = Product(w, None, 1, "test")
    want = product(x.double(), 127, arith.FLOAT64)
    for be in arith.backends():
        for dtype in (torch.int8, torch.int32, torch.float64):
            assert torch.equal(product(x.to(dtype), 127, be), want), (be.name, dtype)


def test_conv_op_keeps_the_layer_bias_per_phase():
    layer = nn.ConvTranspose2d(3, 2, 5, 2, 2, 1)
    (op,) = lower(layer)
    assert isinstance(op, Conv)
    assert torch.equal(op.bias, layer.bias.detach().double().repeat_interleave(4))


def test_conv32_runs_only_where_every_plane_sum_stays_below_2_to_24():
    # 8-bit inputs at the extremes against full-scale weights: every output sums 800 products of
    # 127 * 128 (13.0 M < 2^24), which float32 holds exactly; twice the inputs would not fit.
    c_in, k = 32, 5
    w = torch.full((4, c_in, k, k), -127.0, dtype=torch.float64)
    w[0] = 127.0
    product = Product(w, None, 1, "test")
    assert product.plane_fan == 127 * c_in * k * k and product.conv32_exact(128, torch.device("cpu"))
    x = torch.full((1, 9, 9, c_in), -128, dtype=torch.int32)
    x[:, :, 7:] = 127
    want = product(x, 128, arith.FLOAT64)
    assert want.abs().max().item() > 2**23
    assert torch.equal(product(x, 128, arith.CONV32), want)
    product.float32_results = True  # a caller that scales in float32 takes the single plane as it is
    x127 = x.clamp(-127, 127)  # one 8-bit plane
    got = product(x127, 127, arith.CONV32)
    assert got.dtype == torch.float32 and torch.equal(got.double(), product(x127, 127, arith.FLOAT64))
    two = product(x, 128, arith.CONV32)  # two input planes: float32(hi * 2^8 + lo), the exact sum rounded once
    assert two.dtype == torch.float32 and torch.equal(two, want.float())
    wide = Product(torch.full((2, 2 * c_in, k, k), 127.0, dtype=torch.float64), None, 1, "test")
    assert wide.plane_fan * 128 >= 2**24 and not wide.conv32_exact(128, torch.device("cpu"))
    with arith.force("conv32"):  # work conv32 cannot run exactly falls back to float64
        assert wide.backend(x.repeat(1, 1, 1, 2), 128) is arith.FLOAT64


def test_conv32_takes_9_bit_digits_where_they_save_a_plane_and_rounds_two_planes_once():
    # GDN's x^2 @ gamma in the int8 synthesis: 16-bit squares against 7-bit gamma over 64 channels.
    # Balanced 8-bit digits need three planes for 65535, 9-bit ones two, and 256 * 127 * 64 < 2^24.
    c = 64
    g = torch.Generator().manual_seed(3)
    w = torch.randint(0, 128, (c, c, 1, 1), generator=g).double()
    w[0] = 127
    product = Product(w, None, 1, "test")
    assert product.conv32_bits(65535) == 9 and product.conv32_exact(65535, torch.device("cpu"))
    assert product.conv32_bits(32639) == 8  # two 8-bit planes already
    x = torch.randint(0, 65536, (1, 5, 7, c), generator=g).float()
    x[0, 0] = 65535
    want = product(x, 65535, arith.FLOAT64)
    assert want.abs().max().item() > 2**28  # far beyond float32's integers
    assert torch.equal(product(x, 65535, arith.CONV32), want)  # combined in float64: exact
    product.float32_results = True
    got = product(x, 65535, arith.CONV32)
    assert got.dtype == torch.float32 and torch.equal(got, want.float())  # rounded once, as the caller would
