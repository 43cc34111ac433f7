"""The checkerboard context model: the foundation's contract, two-pass LATN streams and clean errors.

The model is grown from the shipped ANFIC weights. Grown as is, its context output is zero;
the fixture gives the fusion's last layer small seeded weights so that the non-anchor
parameters really depend on the decoded anchors, which is what the two-pass decoder must
reproduce exactly.
"""

import numpy as np
import pytest
import torch

from anfcodec import api, zoo
from anfcodec import container as fmt
from anfcodec.imageio import pad_edge
from anfcodec.models import ANFICCheckerboard
from anfcodec.models.anfic import encoder_autocast_dtype
from anfcodec.models.checkerboard import anchor_mask
from conftest import installed_model
from roundtrip import assert_same_symbols, check_round_trip

CK_ID = "anfic-ckbd-test"
ANFIC_ID = "anfic-n128-m256"


@pytest.fixture(scope="module")
def anfic():
    return zoo.load_model(ANFIC_ID, "cpu")


def _grown(perturb: bool) -> ANFICCheckerboard:
    man = zoo.manifest(zoo.WEIGHTS_DIR)
    base = man["models"][ANFIC_ID]
    model = ANFICCheckerboard.from_config({**base["config"], "arch": ANFICCheckerboard.arch})
    model.init_from(zoo.load_state_dict_file(zoo.WEIGHTS_DIR / base["file"]))
    if perturb:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            last = model.entropy_fusion[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=g) * 0.01)
    model.encode_dtype = encoder_autocast_dtype()  # encodes as an installed model does (bf16 rounding
    return model.eval().to(memory_format=torch.channels_last)  # depends on the kernels, so layout too)


@pytest.fixture(scope="module")
def ck_model(tmp_path_factory):
    yield from installed_model(tmp_path_factory, _grown(perturb=True), CK_ID)


def _x(img) -> torch.Tensor:
    return pad_edge(torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255, 64)


def test_grown_model_codes_like_anfic(anfic, sample_image):
    model = anfic
    grown = _grown(perturb=False)
    x = _x(sample_image)
    a, b = model.compress(x, 4.0, 0), grown.compress(x, 4.0, 0)
    for field in ("hyper", "latent", "scale_index", "offset"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert torch.equal(grown.decompress(b, 4.0), model.decompress(a, 4.0))


def test_context_reaches_only_the_non_anchors(ck_model, anfic, sample_image):
    model = anfic
    x = _x(sample_image)
    a, b = model.compress(x, 4.0, 0), ck_model.compress(x, 4.0, 0)
    anchor = anchor_mask(*b.scale_index.shape[1:])
    assert torch.equal(a.scale_index[:, anchor], b.scale_index[:, anchor])
    assert not torch.equal(a.scale_index[:, ~anchor], b.scale_index[:, ~anchor])
    # The grid is fixed: the context moves the coding distribution, never the decoded values.
    assert torch.equal(ck_model.decompress(b, 4.0), model.decompress(a, 4.0))


@pytest.mark.parametrize("quality", [1.0, 4.0, 8.0])
def test_round_trip_contract(ck_model, small_image, quality):
    r = check_round_trip(ck_model, small_image, quality, refine=0)
    assert r["psnr"] > 20


def test_round_trip_with_refinement_and_tiles(ck_model, sample_image, monkeypatch):
    check_round_trip(ck_model, sample_image, 6.0)  # default refinement at quality 6
    whole = np.asarray(api.decode(api.encode(sample_image, quality=3, model_id=CK_ID)))
    monkeypatch.setattr(api, "TILE", 64)
    monkeypatch.setattr(api, "WHOLE_MAX_PIXELS", 1)
    data = api.encode(sample_image, quality=3, model_id=CK_ID)
    assert len(fmt.unpack(data).streams()) > 1
    tiled = np.asarray(api.decode(data)).astype(int)
    assert tiled.shape == whole.shape and np.abs(tiled - whole).mean() < 3  # each tile decodes in place


def _repack(data: bytes, change) -> bytes:
    c = fmt.unpack(data)
    return fmt.pack(fmt.Container(c.header, change(c.chunks)))


def test_damaged_or_foreign_latent_streams_are_clean_errors(ck_model, sample_image):
    data = api.encode(sample_image, quality=4, refine=0, model_id=CK_ID)
    h, w = np.asarray(sample_image).shape[:2]

    # Flipped anchor words behind a valid chunk CRC change every non-anchor's parameters:
    # the table-index CRC catches it before the second pass is read.
    def flip(chunks):
        out = []
        for t, p in chunks:
            if t == fmt.LATENT_CHUNK:
                bound, crc, stream = fmt.unpack_latent(p)
                p = fmt.pack_latent(bound, crc, stream[:4] + bytes(b ^ 0xA5 for b in stream[4:12]) + stream[12:])
            out.append((t, p))
        return out
    with pytest.raises(api.DecodeError, match="LATN"):
        api.decode(_repack(data, flip))
    # The same file read with other context weights: a mismatch, not garbage.
    other = _grown(perturb=False)
    with pytest.raises(api.DecodeError, match="mismatch"):
        api.chunks_to_symbols(other, fmt.unpack(data).streams()[0], w, h)
    with pytest.raises(fmt.FormatError, match="LATN"):
        api.decode(_repack(data, lambda ch: [(t, p) for t, p in ch if t != fmt.LATENT_CHUNK]))


def test_decoder_symbols_equal_encoder_symbols(ck_model, sample_image):
    x = _x(sample_image)
    enc = ck_model.compress(x, 2.0, 0)
    data = api.encode(sample_image, quality=2, refine=0, model_id=CK_ID)
    h, w = np.asarray(sample_image).shape[:2]
    dec = api.chunks_to_symbols(ck_model, fmt.unpack(data).streams()[0], w, h)
    assert_same_symbols(enc, dec)
    assert torch.equal(enc.scale_index, dec.scale_index)
