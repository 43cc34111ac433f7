"""Rate control: bisection helpers, and targets met on real images."""
import numpy as np
import pytest
from PIL import Image

from anfcodec import api
from anfcodec.metrics import psnr
from anfcodec.ratecontrol import K_LO, TargetError, first_at_least, last_at_most, top_step
from conftest import kodak_images, needs_kodak


TOP = api.quality_range()[1]   # the default model's highest quality


@pytest.mark.parametrize("qualities", [8, 10])
def test_bisection_helpers(qualities):
    k_hi = top_step(qualities)
    f = lambda k: (k - K_LO) * 0.5        # non-decreasing
    assert last_at_most(f, 100.2, k_hi) == K_LO + 200
    assert first_at_least(f, 100.2, k_hi) == K_LO + 201
    assert last_at_most(f, -1, k_hi) is None and first_at_least(f, 1e9, k_hi) is None
    assert last_at_most(f, 1e9, k_hi) == k_hi and first_at_least(f, -1, k_hi) == K_LO


def test_max_bytes_is_a_hard_cap(sample_image):
    full = len(api.encode(sample_image, quality=TOP))
    cap = int(full * 0.6)
    data, report = api.encode_to_target(sample_image, max_bytes=cap)
    assert len(data) <= cap and report.met and report.trials <= 14
    assert len(api.encode(sample_image, quality=min(TOP, report.quality + 1 / 256))) > cap or report.quality == TOP
    with pytest.raises(TargetError, match="even quality 1"):
        api.encode_to_target(sample_image, max_bytes=100)


def test_unreachable_targets_say_why(sample_image):
    _, report = api.encode_to_target(sample_image, target_psnr=80)
    assert not report.met and "highest quality" in report.note and report.quality == TOP
    _, report = api.encode_to_target(sample_image, target_bpp=0.001)
    assert not report.met and "lowest quality" in report.note


@needs_kodak
@pytest.mark.kodak
@pytest.mark.parametrize("index", [0, pytest.param(11, marks=pytest.mark.sweep), pytest.param(22, marks=pytest.mark.sweep)])
def test_targets_met_on_kodak(index):
    path = kodak_images()[index]
    img = Image.open(path).convert("RGB")
    lo, hi = (8 * len(api.encode(img, quality=q)) / (img.width * img.height) for q in (1, TOP))
    target = float(np.sqrt(lo * hi))   # a rate inside the model's range
    data, report = api.encode_to_target(img, target_bpp=target)
    assert report.met and abs(report.bpp - target) <= 0.03 * target
    assert abs(8 * len(data) / (img.width * img.height) - report.bpp) < 1e-12
    q_lo = psnr(np.asarray(img), np.asarray(api.decode(api.encode(img, quality=1))))
    q_hi = psnr(np.asarray(img), np.asarray(api.decode(api.encode(img, quality=TOP))))
    goal = (q_lo + q_hi) / 2
    data, report = api.encode_to_target(img, target_psnr=goal)
    reached = psnr(np.asarray(img), np.asarray(api.decode(data)))
    assert report.met and abs(reached - goal) <= 0.1 and abs(reached - report.psnr) < 1e-9
