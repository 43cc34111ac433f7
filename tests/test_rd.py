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


def test_bench_reports_ms_ssim_and_its_bd_rates(tmp_path, monkeypatch):
    import json

    from conftest import synthetic_image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        synthetic_image(192, 176, seed=10 + i).save(folder / f"im{i}.png")
    monkeypatch.setattr(rd, "PILLOW_CODECS", {"JPEG": ("JPEG", [20, 50, 80, 95], {})})
    monkeypatch.setattr(rd.shutil, "which", lambda _: None)  # no cjxl: JPEG is the one classical curve
    result = rd.run(folder, tmp_path / "out", [1, 3, 6])
    ours, jpeg = result["codecs"][rd.ANFCODEC], result["codecs"]["JPEG"]
    assert len(ours["ms_ssim"]) == 3 and all(0 < v < 1 for v in ours["ms_ssim"] + jpeg["ms_ssim"])
    assert ours["ms_ssim"] == sorted(ours["ms_ssim"])          # higher quality, higher MS-SSIM
    assert isinstance(result["bd_rate_ms_ssim_vs"]["JPEG"], float)
    row = result["per_image"][rd.ANFCODEC][0]["images"][0]
    assert 0 < row["ms_ssim"] < 1
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "MS-SSIM (dB)" in md and "% at equal MS-SSIM" in md
    assert (tmp_path / "out" / "rd-msssim.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["bd_rate_ms_ssim_vs"]


def _run(images: dict[str, float], settings=(1, 4, 8)) -> dict:
    """A bench result whose image ``name`` codes at bpp ``scale * q / 10`` and PSNR ``25 + q``."""
    per_image = [{"setting": q, "images": [{"image": name, "bpp": scale * q / 10, "psnr": 25.0 + q}
                                           for name, scale in images.items()]} for q in settings]
    rows = [p["images"] for p in per_image]
    curve = {"settings": list(settings), "bpp": [sum(r["bpp"] for r in rs) / len(rs) for rs in rows],
             "psnr": [sum(r["psnr"] for r in rs) / len(rs) for rs in rows]}
    return {"codecs": {rd.ANFCODEC: curve}, "per_image": {rd.ANFCODEC: per_image}, "model": "m"}


def test_a_subset_run_compares_on_the_images_and_qualities_both_measured(tmp_path):
    import json
    full = tmp_path / "full.json"
    full.write_text(json.dumps(_run({"a.png": 1.0, "b.png": 2.0, "c.png": 4.0}, settings=(1, 2, 4, 8))))
    same = rd.compare_runs(_run({"a.png": 1.0}), {"full": full})["full"]
    assert same["bd_rate"] == pytest.approx(0.0, abs=1e-9)  # not against the three images' mean rate
    assert same["per_image"] == {"a.png": pytest.approx(0.0, abs=1e-9)}
    smaller = rd.compare_runs(_run({"a.png": 0.9, "b.png": 1.8}), {"full": full})["full"]
    assert smaller["bd_rate"] == pytest.approx(-10.0, abs=1e-6)
    assert smaller["per_image"]["b.png"] == pytest.approx(-10.0, abs=1e-6)
