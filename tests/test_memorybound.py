"""Memory benchmark plumbing: untiled coding per size in fresh processes, and where the bound is crossed."""
from anfcodec.benchmarks import memorybound
from conftest import SAMPLE


def test_whole_image_peaks_and_the_crossing(monkeypatch):
    result = memorybound.run([SAMPLE], 4, sizes=[(128, 64), (192, 128)])
    rows = result["rows"]
    assert [r["megapixels"] for r in rows] == [128 * 64 / 1e6, 192 * 128 / 1e6]
    assert all(100 < r["encode_mib"] < memorybound.BOUND_MIB and 100 < r["decode_mib"] for r in rows)
    assert result["largest_within_mp"] == rows[-1]["megapixels"] and result["smallest_over_mp"] is None
    assert set(result["fits"]) == {"encode", "decode"}
    md = memorybound.markdown(result)
    assert "| 192x128 | 0.025 |" in md and "smallest measured above it: none" in md


def test_padded_pixels():
    assert memorybound.padded_pixels(768, 512) == 768 * 512
    assert memorybound.padded_pixels(769, 500) == 832 * 512
