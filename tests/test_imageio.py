"""Image modes and metadata through the CLI: each mode has a defined, tested behaviour."""
import json

import numpy as np
import pytest
from PIL import Image, ImageCms

from conftest import run_cli, synthetic_image


def cli_round_trip(img: Image.Image, tmp_path, *encode_args, suffix=".png", **save_kw) -> tuple[Image.Image, dict]:
    src = tmp_path / f"in{suffix}"
    img.save(src, **save_kw)
    anf, out = tmp_path / "x.anf", tmp_path / "out.png"
    r = run_cli("encode", src, "-o", anf, "-q", "8", "-f", *encode_args)
    assert r.returncode == 0, r.stderr
    r = run_cli("decode", anf, "-o", out, "-f")
    assert r.returncode == 0, r.stderr
    info = json.loads(run_cli("info", anf, "--json").stdout)
    return Image.open(out), info


@pytest.fixture(scope="module")
def rgb():
    return synthetic_image(80, 60, seed=11)


def test_grayscale_stays_one_channel(rgb, tmp_path):
    out, info = cli_round_trip(rgb.convert("L"), tmp_path)
    assert out.mode == "L" and info["mode"] == "L"


def test_alpha_is_lossless(rgb, tmp_path):
    rgba = rgb.copy()
    alpha = (np.arange(80 * 60).reshape(60, 80) % 251).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    out, info = cli_round_trip(rgba, tmp_path)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out.getchannel("A")), alpha)
    assert "alpha channel (lossless)" in info["metadata"]


def test_gray_alpha(rgb, tmp_path):
    la = rgb.convert("LA")
    out, _ = cli_round_trip(la, tmp_path)
    assert out.mode == "LA"
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(la.getchannel("A")))


def test_palette_with_and_without_transparency(rgb, tmp_path):
    p = rgb.convert("P", palette=Image.ADAPTIVE, colors=32)
    out, _ = cli_round_trip(p, tmp_path)
    assert out.mode == "RGB"
    p.info["transparency"] = 0
    out, _ = cli_round_trip(p, tmp_path, transparency=0)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(p.convert("RGBA").getchannel("A")))


def test_sixteen_bit_reduced_with_warning(tmp_path):
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    src = tmp_path / "g16.png"
    Image.fromarray(arr).save(src)
    r = run_cli("encode", src, "-o", tmp_path / "x.anf")
    assert r.returncode == 0 and b"8 bits" in r.stderr
    r = run_cli("decode", tmp_path / "x.anf", "-o", tmp_path / "o.png")
    out = np.asarray(Image.open(tmp_path / "o.png")).astype(int)
    assert out.shape == (48, 64) and abs(out.mean() - arr.mean() / 257) < 8


def test_icc_profile_byte_identical_and_exif_kept(rgb, tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "anfcodec test camera"   # Make
    out, info = cli_round_trip(rgb, tmp_path, icc_profile=icc, exif=exif.tobytes())
    assert out.info.get("icc_profile") == icc
    assert out.getexif().get(0x010F) == "anfcodec test camera"
    assert {"ICC profile", "EXIF"} <= set(info["metadata"])


def test_strip_drops_metadata(rgb, tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out, info = cli_round_trip(rgb, tmp_path, "--strip", icc_profile=icc)
    assert "icc_profile" not in out.info and info["metadata"] == []


def test_exif_orientation_applied(tmp_path):
    img = synthetic_image(64, 32, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90 CW to display
    out, info = cli_round_trip(img, tmp_path, suffix=".jpg", exif=exif.tobytes(), quality=95)
    assert out.size == (32, 64) and (info["width"], info["height"]) == (32, 64)
    assert out.getexif().get(0x0112, 1) == 1


def test_cmyk_converted(rgb, tmp_path):
    out, info = cli_round_trip(rgb.convert("CMYK"), tmp_path, suffix=".tif")
    assert out.mode == "RGB"


def test_write_output_leaves_old_file_and_no_temporary_on_failure(tmp_path, monkeypatch):
    import os
    from anfcodec.imageio import write_output
    out = tmp_path / "x.png"
    out.write_bytes(b"precious")

    def fail(*_):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_output(out, b"new")
    assert out.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == ["x.png"]
    monkeypatch.undo()
    write_output(out, b"new")
    assert out.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_png_compress_level_changes_size_not_pixels(rgb, tmp_path):
    src, anf = tmp_path / "in.png", tmp_path / "x.anf"
    rgb.save(src)
    assert run_cli("encode", src, "-o", anf, "-q", "4").returncode == 0
    sizes, pixels = {}, {}
    for level in ("0", "9"):
        out = tmp_path / f"single{level}.png"
        r = run_cli("decode", anf, "-o", out, "--png-compress", level)
        assert r.returncode == 0, r.stderr
        batch_dir = tmp_path / f"batch{level}"
        r = run_cli("decode", anf, "--out-dir", batch_dir, "--png-compress", level)
        assert r.returncode == 0, r.stderr
        assert (batch_dir / "x.png").read_bytes() == out.read_bytes()  # batch mode passes the level on
        sizes[level], pixels[level] = out.stat().st_size, np.asarray(Image.open(out))
    assert sizes["0"] > 1.2 * sizes["9"]  # level 0 stores, level 9 deflates
    assert np.array_equal(pixels["0"], pixels["9"])
    assert run_cli("decode", anf, "-o", tmp_path / "bad.png", "--png-compress", "10").returncode == 2
