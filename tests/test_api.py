"""Python API: encode/decode contract on small images the tests make."""
import numpy as np
import pytest

import anfcodec
from anfcodec import api
from roundtrip import check_round_trip


@pytest.mark.parametrize("quality", [1, 4, 8])
def test_round_trip_contract(model, small_image, quality):
    check_round_trip(model, small_image, quality, refine=0)


@pytest.mark.parametrize("refine", [None, 2])
def test_refined_round_trip(model, small_image, refine):
    check_round_trip(model, small_image, 8, refine=refine)


def test_top_level_api(small_image):
    data = anfcodec.encode(small_image, quality=3)
    assert isinstance(data, bytes)
    img = anfcodec.decode(data)
    assert img.size == small_image.size and img.mode == "RGB"


def test_grayscale_restored_as_grayscale(small_image):
    img = anfcodec.decode(anfcodec.encode(small_image.convert("L"), quality=6))
    assert img.mode == "L" and img.size == small_image.size


def test_numpy_input_and_fractional_quality(small_image):
    data = anfcodec.encode(np.asarray(small_image), quality=4.5)
    assert abs(api.fmt.unpack(data).header.quality - 4.5) < 1e-9


def test_quality_out_of_range(small_image):
    with pytest.raises(ValueError, match="quality"):
        api.check_quality(9, 8)
    assert api.check_quality(9, 10) == 9
    lo, hi = api.quality_range()
    with pytest.raises(ValueError, match=f"between 1 and {hi:g}"):
        anfcodec.encode(small_image, quality=hi + 0.5)
    with pytest.raises(ValueError, match="quality"):
        anfcodec.encode(small_image, quality=0.5)


def test_quality_range_comes_from_the_model():
    for model_id in ("anfic-ckbd-n64-m256", api.default_model_id()):
        model = api.load_model(model_id)
        assert api.quality_range(model_id) == (1.0, float(model.num_qualities))


def test_tiny_image(model):
    from PIL import Image
    img = Image.new("RGB", (1, 1), (200, 10, 30))
    out = anfcodec.decode(anfcodec.encode(img, quality=8))
    assert out.size == (1, 1)
    assert np.abs(np.asarray(out).astype(int) - [200, 10, 30]).max() < 40


def test_file_claiming_a_quality_above_its_models_top_is_refused(small_image):
    data = anfcodec.encode(small_image, quality=3, model_id="anfic-ckbd-n64-m256")   # qualities 1..8
    c = api.fmt.unpack(data)
    c.header.quality = 9.0
    with pytest.raises(api.fmt.FormatError, match="quality 9 outside 1..8 of anfic-ckbd-n64-m256"):
        anfcodec.decode(api.fmt.pack(c))
