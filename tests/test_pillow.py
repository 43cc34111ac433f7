"""The Pillow plugin (``anfcodec.pillow``): open by signature, lazy header, save, imageio."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import anfcodec.pillow  # noqa: F401  (registers the format)
from anfcodec import api
from conftest import SAMPLE, synthetic_image


@pytest.fixture(scope="module")
def anf(tmp_path_factory):
    path = tmp_path_factory.mktemp("pillow") / "s.anf"
    path.write_bytes(api.encode(synthetic_image(96, 64, seed=5), quality=2))
    return path


def test_open_is_lazy_and_needs_no_torch(anf):
    code = ("import sys, anfcodec.pillow; from PIL import Image; im = Image.open(sys.argv[1]); "
            "print(im.format, im.size, im.mode, im.info['quality'], 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(anf)], capture_output=True, timeout=120)
    assert r.stdout.decode().split() == ["ANF", "(96,", "64)", "RGB", "2.0", "False"], r.stderr


def test_open_decodes_the_same_pixels_as_the_api_also_without_an_extension(anf, tmp_path):
    expected = np.asarray(api.decode(anf.read_bytes()))
    plain = tmp_path / "no_extension"
    plain.write_bytes(anf.read_bytes())
    for path in (anf, plain):
        with Image.open(path) as im:
            assert im.format == "ANF"
            assert np.array_equal(np.asarray(im), expected)


def test_save_encodes_with_the_given_options(tmp_path):
    src = Image.open(SAMPLE).convert("L").crop((0, 0, 128, 96))
    out = tmp_path / "g.anf"
    src.save(out, quality=4)
    with Image.open(out) as im:
        assert im.info["quality"] == 4 and im.mode == "L" and im.size == src.size
    src.save(tmp_path / "lossless.anf", lossless=True)
    with Image.open(tmp_path / "lossless.anf") as im:
        assert np.array_equal(np.asarray(im), np.asarray(src))


def test_registered_extension_and_mime():
    assert Image.registered_extensions()[".anf"] == "ANF" and Image.MIME["ANF"] == "image/x-anf"


def test_imageio_reads_through_pillow(anf):
    iio = pytest.importorskip("imageio.v3")
    assert np.array_equal(iio.imread(anf), np.asarray(api.decode(anf.read_bytes())))


def test_a_damaged_header_is_not_opened(anf, tmp_path):
    bad = tmp_path / "bad.anf"
    data = bytearray(anf.read_bytes())
    data[20] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(bad)
