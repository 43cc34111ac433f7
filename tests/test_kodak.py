"""The round-trip contract on every Kodak image at qualities 1, 4 and 8 (skipped without the data).

``make test`` runs three of them (a landscape, a detailed and a smooth image); the other 21 are
the ``sweep`` marker's (``make test-sweep``), which keeps the suite within 30 minutes on 2 AVX2 cores."""
import pytest
from PIL import Image

from conftest import kodak_images, needs_kodak
from roundtrip import check_round_trip

pytestmark = [needs_kodak, pytest.mark.kodak]


REPRESENTATIVE = {"kodim01", "kodim13", "kodim23"}


def _params():
    return [pytest.param(p, marks=() if p.stem in REPRESENTATIVE else pytest.mark.sweep)
            for p in kodak_images()] or [None]


@pytest.mark.parametrize("path", _params(), ids=lambda p: p.stem if p else "none")
def test_kodak_round_trip(model, path):
    img = Image.open(path).convert("RGB")
    res = [check_round_trip(model, img, q) for q in (1, 4, 8)]
    bpp = [r["bpp"] for r in res]
    psnr = [r["psnr"] for r in res]
    assert bpp == sorted(bpp) and len(set(bpp)) == 3, bpp
    assert psnr == sorted(psnr) and len(set(psnr)) == 3, psnr
