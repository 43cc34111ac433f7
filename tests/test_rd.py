"""RD bench: the plot shows anfcodec's whole curve, however far past the usual 2 bpp it reaches."""
import pytest

from anfcodec.benchmarks import rd


@pytest.mark.parametrize("top_bpp, xmax", [(1.6, 2.0), (2.634, 2.634 * 1.05)])
def test_plot_range_follows_anfcodec_curve(tmp_path, monkeypatch, top_bpp, xmax):
    plt = pytest.importorskip("matplotlib.pyplot")
    seen = {}
    monkeypatch.setattr(plt, "close", lambda fig: seen.update(x=fig.axes[0].get_xlim(), y=fig.axes[0].get_ylim()))
    result = {"folder": "kodak", "images": 2, "model": "m",
              "codecs": {rd.ANFCODEC: {"bpp": [0.1, 1.0, top_bpp], "psnr": [26.0, 34.0, 41.24]},
                         "WebP": {"bpp": [0.2, 2.8], "psnr": [28.0, 41.7]}}}
    rd.plot(result, tmp_path / "rd.png")
    assert (tmp_path / "rd.png").stat().st_size > 0
    assert seen["x"] == pytest.approx((0, xmax)) and seen["y"] == pytest.approx((24, 43))
