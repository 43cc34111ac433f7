"""High-rate bench: rate at a target PSNR is interpolated between bracketing points, lossless is separate."""
import math

from anfcodec.benchmarks import highrate


def points(*pairs, lossless=None):
    out = [{"setting": i, "bpp": b, "psnr": p, "lossless": False} for i, (b, p) in enumerate(pairs)]
    if lossless:
        out.append({"setting": 0, "bpp": lossless, "psnr": math.inf, "lossless": True})
    return out


def test_rate_at_interpolates_in_log_rate():
    pts = points((4.0, 44.0), (16.0, 48.0), lossless=20.0)
    assert math.isclose(highrate.rate_at(pts, 46.0), 8.0)
    assert highrate.rate_at(pts, 50.0) is None       # not bracketed: no extrapolation
    assert highrate.rate_at(points((2.0, 40.0)), 40.5) is None


def test_markdown_lists_every_codec():
    result = {"images": 2, "codecs": {"a": points((4.0, 44.0), (8.0, 46.0), lossless=12.0),
                                      "PNG": [{"setting": None, "bpp": 15.0, "psnr": math.inf, "lossless": True}]}}
    result["rate_at"] = {n: {str(t): highrate.rate_at(p, t) for t in highrate.PSNR_TARGETS}
                         for n, p in result["codecs"].items()}
    md = highrate.markdown(result)
    assert "| bpp at 42 dB | bpp at 45 dB | bpp at 50 dB |" in md
    assert "| a | - | 5.66 | - | 12.00 |" in md and "| PNG | - | - | - | 15.00 | 15.00 / lossless |" in md


def test_anfcodec_runs_lossy_at_its_top_qualities_and_near_lossless_on_its_base():
    from anfcodec.zoo import quality_range
    top = int(quality_range()[1])
    todo = highrate.jobs(have_jxl=False)
    assert [s for n, s in todo if n == "anfcodec lossy"] == [f"q{q}" for q in (top - 2, top - 1, top)]
    assert [s for n, s in todo if n == "anfcodec q9 + near-lossless"] == highrate.ANF_MAX_ERRORS
