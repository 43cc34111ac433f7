"""The round-trip contract on every Kodak image at qualities 1, 4 and 8 (skipped without the data)."""
import pytest
from PIL import Image

from conftest import kodak_images, needs_kodak
from roundtrip import check_round_trip

pytestmark = [needs_kodak, pytest.mark.kodak]


@pytest.mark.parametrize("path", kodak_images() or [None], ids=lambda p: p.stem if p else "none")
def test_kodak_round_trip(model, path):
    img = Image.open(path).convert("RGB")
    res = [check_round_trip(model, img, q) for q in (1, 4, 8)]
    bpp = [r["bpp"] for r in res]
    psnr = [r["psnr"] for r in res]
    assert bpp == sorted(bpp) and len(set(bpp)) == 3, bpp
    assert psnr == sorted(psnr) and len(set(psnr)) == 3, psnr
