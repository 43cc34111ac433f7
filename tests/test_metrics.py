"""BD-rate and PSNR helpers."""
import numpy as np
import pytest

from anfcodec.metrics import bd_rate, psnr


def test_bd_rate_of_a_uniformly_cheaper_codec():
    rate = np.array([0.25, 0.5, 1.0, 2.0])
    q = np.array([28.0, 31.0, 34.0, 37.0])
    assert abs(bd_rate(rate, q, rate * 0.9, q) - (-10.0)) < 1e-6
    assert abs(bd_rate(rate, q, rate, q)) < 1e-9


def test_bd_rate_without_overlap_is_none():
    assert bd_rate([1, 2], [30, 31], [1, 2], [40, 41]) is None


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy(); b[0, 0, 0] = 255
    assert abs(psnr(a, b) - 10 * np.log10(48)) < 1e-9
    assert psnr(a, a) == float("inf")


def test_ms_ssim_orders_distortions_and_skips_small_images():
    import numpy as np

    from anfcodec.metrics import ms_ssim, ms_ssim_db
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (176, 200, 3)).astype(np.uint8)
    mild = np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8)
    strong = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    assert ms_ssim(a, a) == pytest.approx(1.0)
    assert 1 > ms_ssim(a, mild) > ms_ssim(a, strong) > 0
    assert ms_ssim(a[:150], a[:150]) is None
    assert ms_ssim_db(0.99) == pytest.approx(20.0)
