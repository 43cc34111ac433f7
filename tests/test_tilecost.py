"""The tiling-cost benchmark: whole against tiled coding, as extra rate at equal PSNR."""
import math

import pytest

from anfcodec.benchmarks import tilecost
from conftest import synthetic_image


def test_rate_at_interpolates_log_rate_linearly_in_psnr():
    curve = [(0.5, 30.0), (1.0, 32.0), (2.0, 34.0)]
    assert tilecost.rate_at(curve, 32.0) == pytest.approx(1.0)
    assert tilecost.rate_at(curve, 33.0) == pytest.approx(math.sqrt(2))     # halfway in log-rate
    assert tilecost.rate_at(curve[::-1], 31.0) == pytest.approx(math.sqrt(0.5))
    assert tilecost.rate_at(curve, 35.0) == pytest.approx(2 * math.sqrt(2))  # extrapolated


def test_run_reports_a_cost_per_image(tmp_path):
    path = tmp_path / "a.png"
    synthetic_image(128, 128).save(path)
    result = tilecost.run([path], quality=4, tile=64)
    row = result["rows"][0]
    assert row["whole"][0] > 0 and row["tiled"][0] > 0
    # 64-pixel tiles each carry their own hyperprior side information: a clear, finite cost
    assert 0 < row["cost_percent"] < 200 and result["mean_cost_percent"] == row["cost_percent"]
    md = tilecost.markdown(result)
    assert "| a.png | 4 of 64x64 |" in md and "Mean cost" in md
