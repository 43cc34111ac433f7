"""Speed benchmark plumbing: mosaics of the right size, worker processes that report time, memory and phases."""
import subprocess
import sys

import numpy as np

from anfcodec.benchmarks import speed
from conftest import SAMPLE


def test_mosaic_fills_the_requested_size():
    img = speed.mosaic([SAMPLE], 1000, 333)
    assert img.size == (1000, 333)
    assert np.asarray(img).std() > 10  # photo-like content, not an empty canvas


def test_worker_reports_time_memory_and_phases(tmp_path):
    png = tmp_path / "in.png"
    speed.mosaic([SAMPLE], 128, 96).save(png)
    enc = speed._measure("encode", png, tmp_path / "x.anf", 2, 4, settle_s=0.5)
    dec = speed._measure("decode", tmp_path / "x.anf", tmp_path / "y.png", 1, 4, count=True)
    fast = speed._measure("decode-fast", tmp_path / "x.anf", tmp_path / "z.png", 1, 4)
    assert len(enc["times"]) == 2 and enc["peak_rss_mb"] > 50
    assert enc["settle_runs"] >= 1 and dec["settle_runs"] == 0  # settling ran only where asked for
    assert {"model", "entropy", "io"} <= set(enc["phases"]) and {"model", "entropy", "io"} <= set(dec["phases"])
    assert (tmp_path / "y.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "z.png").read_bytes()[:4] == b"\x89PNG"
    cli = speed.cli_calls(SAMPLE, tmp_path, 4, repeats=1)
    assert cli["size"] == "384x256" and all(0 < t < 120 for t in cli["encode"] + cli["decode"])
    result = {"quality": 4, "cpu_count": 2, "mbt2018_mean": {"encode": enc, "decode": dec}, "decode_fast": fast,
              "cli": cli,
              "rows": [{"size": "tiny", "width": 128, "height": 96, "megapixels": 128 * 96 / 1e6, "repeats": 2,
                        "encode": enc, "decode": dec, "bytes": 1}]}
    md = speed.markdown(result)
    assert "ratio anfcodec / mbt2018-mean | 1.00 | 1.00 |  | 1.00 |" in md
    assert "ratio without image I/O (codec work only, both sides) | 1.00 | 1.00 |" in md
    assert "| `anfcodec encode` / `anfcodec decode` | " in md
    # 128x96 image: the four transforms of the exact decoder do tens of MMAC per pixel, not zero
    assert "gmac" not in enc and 0.1 < dec["gmac"] < 10


def test_mbt_worker_pays_the_same_image_io(tmp_path):
    """mbt2018-mean is timed from PNG bytes to PNG bytes, as anfcodec is: the ratio once set
    anfcodec's PNG writing (a fifth of a Kodak decode) against a bare tensor decode."""
    png = tmp_path / "in.png"
    speed.mosaic([SAMPLE], 128, 128).save(png)
    for kind in ("mbt-encode", "mbt-decode"):
        m = speed._measure(kind, png, tmp_path / "unused", 1, 4, width=16)
        assert m["phases"]["io"] > 0 and m["phases"]["model"] > 0
        assert m["phases"]["io"] + m["phases"]["model"] <= m["times"][-1] * 1.01


def test_worker_peak_excludes_the_parents():
    """A worker started from a large process reports its own peak, not the parent's (CI ran the
    memory test late in one long pytest process and read pytest's peak)."""
    ballast = np.ones(1536 * 2**20, np.uint8)  # 1.5 GiB resident in this process
    code = "from anfcodec.benchmarks.speed import _peak_rss_mb; print(_peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 5 < child < 1024 < ballast.nbytes / 2**20


def test_count_macs_attributes_work_to_modules():
    import torch
    from torch import nn
    a, b = nn.Conv2d(3, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
    x = torch.zeros(1, 3, 10, 10)
    with torch.inference_mode():
        gmac = speed.count_macs(lambda: (b(a(x)), torch.matmul(torch.ones(5, 7), torch.ones(7, 2))), {"a": a, "b": b})
    assert round(gmac["a"] * 1e9) == 8 * 100 * 3 * 9           # outputs x C_in k^2
    assert round(gmac["b"] * 1e9) == 8 * 100 * 4 * 16          # inputs x C_out k^2
    assert round(gmac["other"] * 1e9) == 5 * 2 * 7 and gmac["total"] == gmac["a"] + gmac["b"] + gmac["other"]


def test_bench_settles_by_default_for_as_long_as_the_module_says():
    from anfcodec.cli import bench
    settle = next(p for p in bench.params if p.name == "settle")
    assert settle.default == speed.SETTLE_S > 0


def test_int8_synthesis_work_counts_at_convolution_size():
    """The int8 synthesis does the fixed-point decoder's convolutions with other arithmetic: the
    work counted must agree (it once counted only the hyper path, 6 GMAC of 26)."""
    import numpy as np

    from anfcodec import api, arith
    img = speed.mosaic([SAMPLE], 256, 192)
    counts = {}
    for model_id in ("anfic-ckbd-n64-m256", "anfic-ckbd-n64-m256-int8"):
        data = api.encode(np.asarray(img), quality=4, model_id=model_id)
        with arith.force("float32"):  # digit planes on every CPU, so that plane counts compare
            counts[model_id] = speed.count_macs(lambda: api.decode(data))
    fixed, int8 = counts["anfic-ckbd-n64-m256"], counts["anfic-ckbd-n64-m256-int8"]
    assert abs(int8["total"] / fixed["total"] - 1) < 0.1
    assert int8["_float32"] < 0.6 * fixed["_float32"]  # one or two digit planes per product, not 2-5
