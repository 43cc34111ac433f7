"""Building blocks: the transposed convolution's inference form."""
import pytest
import torch
from torch import nn

from anfcodec.layers import ConvTranspose2d, deconv


@pytest.mark.parametrize("cin,cout,k,stride", [(64, 3, 5, 2), (32, 3, 16, 16), (8, 16, 3, 2)])
def test_subpixel_inference_computes_the_transposed_convolution(cin, cout, k, stride):
    torch.manual_seed(k)
    layer = ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2 if k < stride * 2 + 2 else 0,
                            output_padding=stride - 1 if k < stride * 2 + 2 else 0)
    plain = nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=layer.padding, output_padding=layer.output_padding)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(1, cin, 6, 7)
    with torch.no_grad():
        assert torch.allclose(layer.eval()(x), plain(x), atol=1e-5)
        with torch.no_grad():
            layer.weight.mul_(2)  # the cached sub-pixel kernel follows the weights
            plain.weight.mul_(2)
        assert torch.allclose(layer(x), plain(x), atol=1e-5)


def test_training_and_wide_layers_keep_the_transposed_kernel():
    layer = deconv(8, 32)  # more outputs than SUBPIXEL_MAX_CHANNELS: oneDNN's own kernel is faster
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        assert torch.equal(layer.eval()(x), nn.ConvTranspose2d.forward(layer, x))
    narrow = deconv(8, 3).train()
    out = narrow(x)  # with gradients: the plain form, differentiable as trained
    out.sum().backward()
    assert narrow.weight.grad is not None and not hasattr(narrow, "_subpixel_key")
