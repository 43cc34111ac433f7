"""Fixed-point networks: exact integer arithmetic, so any summation order gives the same result."""
import numpy as np
import pytest
import torch
from torch import nn

from anfcodec import api
from anfcodec.entropy_models import GDN
from anfcodec import exact
from anfcodec import arith
from anfcodec.exact import ExactnessError, ExactSequential, to_grid
from anfcodec.imageio import pad_edge


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), GDN(16), nn.ConvTranspose2d(16, 16, 5, 2, 2, 1),
                         GDN(16, inverse=True), nn.LeakyReLU(), nn.Conv2d(16, 3, 3, 1, 1)).eval()


def test_fixed_point_network_tracks_the_float_one():
    net, x = _net(), torch.rand(1, 3, 32, 48)
    exact = ExactSequential(net, 14, 16)(to_grid(x, 14)) * 2.0**-14
    with torch.no_grad():
        assert (exact - net(x).double()).abs().max() < 1e-3


def test_fixed_point_result_ignores_threads_and_memory_layout():
    net, x = ExactSequential(_net(), 14, 16), to_grid(torch.rand(1, 3, 64, 64), 14)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = net(x)
        torch.set_num_threads(max(2, threads))
        many = net(x.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many.contiguous())


def test_out_of_range_activations_are_refused_not_rounded():
    net = ExactSequential(_net(), 14, 16)
    with pytest.raises(ExactnessError):
        net(torch.full((1, 3, 16, 16), 2.0**40, dtype=torch.float64))


def test_exact_decoder_matches_float_decoder_within_one_level(model, small_image):
    rgb = np.asarray(small_image)
    x = pad_edge(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255, model.pad_multiple)
    for q in (1, 8):
        sym = model.compress(x, q)
        exact = api._to_rgb8(model.decompress(sym, q), rgb.shape[1], rgb.shape[0]).astype(int)
        fast = api._to_rgb8(model.decompress_float(sym, q), rgb.shape[1], rgb.shape[0]).astype(int)
        assert np.abs(exact - fast).max() <= 1
        assert (exact != fast).mean() < 0.05


def test_fast_decode_is_close_to_the_exact_one(small_image):
    data = api.encode(small_image, quality=4)
    exact = np.asarray(api.decode(data)).astype(int)
    fast = np.asarray(api.decode(data, fast=True)).astype(int)
    assert np.abs(exact - fast).max() <= 1


def test_forged_huge_latents_are_a_clean_decode_error(model, small_image, monkeypatch):
    # A stream forged with valid CRCs can carry latents far beyond anything an image produces.
    real = api.chunks_to_symbols

    def forged(*args):
        sym = real(*args)
        sym.latent[:] = 2**30
        return sym
    data = api.encode(small_image, quality=1)
    monkeypatch.setattr(api, "chunks_to_symbols", forged)
    with pytest.raises(api.DecodeError, match="out of range"):
        api.decode(data)


def test_fixed_point_network_is_the_same_in_every_backend():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), GDN(32), nn.ConvTranspose2d(32, 32, 5, 2, 2, 1),
                        GDN(32, inverse=True), nn.Conv2d(32, 3, 3, 1, 1)).eval()
    x = to_grid(torch.rand(1, 3, 40, 56), 14)
    outs = []
    for be in arith.backends():
        with arith.force(be.name):
            outs.append(ExactSequential(net, 14, 16)(x))
    assert all(torch.equal(o, outs[-1]) for o in outs)


def test_size_keeping_network_in_bands_equals_one_pass(monkeypatch):
    # The post-filter's shape: 'same' convolutions and pointwise layers run band by band with context rows.
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.LeakyReLU(), nn.Conv2d(8, 8, 5, 1, 2), GDN(8),
                        nn.Conv2d(8, 3, 3, 1, 1)).eval()
    fixed = ExactSequential(net, 14, 16)
    assert fixed.halo == 4
    x = to_grid(torch.rand(1, 3, 45, 31) - 0.5, 14)
    whole = fixed(x)  # one pass: the image is smaller than a band
    monkeypatch.setattr(exact, "BAND_BYTES", 1)  # bands of 4 * halo = 16 rows: three bands
    assert torch.equal(fixed(x), whole)
    assert ExactSequential(_net(), 14, 16).halo is None  # strided layers: one pass
