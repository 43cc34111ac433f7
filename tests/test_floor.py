"""The arithmetic floor: work per network, peak matrix-product speed, least times and ratios."""
import pytest
import torch

from anfcodec import arith
from anfcodec.benchmarks import floor


def _result():
    anf = {"encode": {"g_a1": 30.0, "post_filter": 2.0, "other": 8.0, "total": 40.0},
           "decode (fixed point)": {"g_a1": 0.0, "post_filter": 0.0, "other": 20.0, "total": 20.0},
           "decode --fast (float32)": {"g_a1": 0.0, "post_filter": 2.0, "other": 14.0, "total": 16.0}}
    mbt = {"encode": {"g_a": 4.0, "g_s": 0.0, "total": 4.0}, "decode": {"g_a": 0.0, "g_s": 4.0, "total": 4.0}}
    return {"quality": 4.0, "size": "768x512", "model": "m", "anfcodec": anf, "mbt2018_mean": mbt,
            "gemm_peak_gmac_s": {"float32": 100.0, "float64": 50.0}, "threads": 2}


def test_least_times_use_the_peak_of_each_paths_arithmetic():
    rows = {name: (g, s) for name, g, s in floor.floors(_result())}
    assert rows["anfcodec decode (fixed point)"] == (20.0, 0.4)   # float64 peak
    assert rows["anfcodec decode --fast (float32)"] == (16.0, 0.16)
    assert rows["mbt2018-mean encode"] == (4.0, 0.04)


def test_markdown_reports_work_ratios_and_per_network_work():
    md = floor.markdown(_result())
    assert "encode 10.00, decode 4.00" in md
    assert "| g_a1 | 30.00 | 0.00 | 0.00 |" in md and "| post_filter | 2.00 | 0.00 | 2.00 |" in md
    assert "| g_s | 0.00 | 4.00 |" in md


def test_gemm_peak_is_a_throughput():
    assert floor.gemm_peak(torch.float64, shapes=[(64, 64, 64)], repeats=2) > 0


def test_digit_products_and_bf16_encoding_take_their_own_peaks():
    result = _result()
    result["gemm_peak_gmac_s"].update({"bfloat16": 400.0, "int8": 800.0})
    result["encode_dtype"] = "bfloat16"
    result["anfcodec"]["decode (fixed point)"].update({"_digit": 15.0, "_int8": 60.0})
    rows = {name: (g, s) for name, g, s in floor.floors(result)}
    assert rows["anfcodec encode"] == (40.0, 0.1)                    # bf16 peak
    assert rows["mbt2018-mean encode"] == (4.0, 0.01)                # given the same precision
    assert rows["anfcodec decode (fixed point)"] == (20.0, 5 / 50 + 60 / 800)
    md = floor.markdown(result)
    assert "ran 15.0 of its 20.0 GMAC as" in md and "_digit" not in md


@pytest.mark.skipif(arith.candidates()[0].name != "int8", reason="no exact int8 matrix product on this CPU build")
def test_int8_peak_is_a_throughput():
    assert floor.gemm_peak(torch.int8, shapes=[(64, 64, 64)], repeats=2) > 0
