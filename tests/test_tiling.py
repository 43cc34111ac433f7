"""Tiled coding: large images are coded as independent tiles, each its own HLAT/LATN pair."""
import numpy as np
import pytest

import anfcodec
from anfcodec import api
from anfcodec import container as fmt
from anfcodec.metrics import psnr


@pytest.fixture()
def tiny_tiles(monkeypatch):
    monkeypatch.setattr(api, "WHOLE_MAX_PIXELS", 0)
    monkeypatch.setattr(api, "TILE", 64)


def test_tile_size_policy():
    assert api.tile_size(768, 512) is None                  # Kodak size: coded whole
    assert api.tile_size(1536, 1024) is None                # 1.57 MP: still whole
    assert api.tile_size(1537, 1000) == (576, 512)          # pads to 1600x1024 = 1.64 MP: 3 x 2 tiles
    assert api.tile_size(6000, 4000) == (640, 576)          # 10 x 7 tiles
    assert api.tile_size(1600, 1100) == (576, 576)          # equal tiles, no thin edge strip
    boxes = fmt.tile_grid(1600, 1100, (576, 576))
    assert len(boxes) == 6 and boxes[-1] == (1152, 576, 1600, 1100)


def test_tile_size_on_request():
    assert api.tile_size(768, 512, 384) == (384, 256)       # Kodak size in four
    assert api.tile_size(300, 200, 384) is None             # smaller than one tile: whole
    for bad in (0, 100, 63):
        with pytest.raises(ValueError, match="multiple of 64"):
            api.tile_size(768, 512, bad)


def test_requested_tiles_round_trip(small_image):
    calls = []
    data = anfcodec.encode(small_image, quality=3, tile=64, progress=lambda *a: calls.append(("enc", *a)))
    assert fmt.describe(data)["tiles"]["count"] == 4
    out = np.asarray(anfcodec.decode(data, progress=lambda *a: calls.append(("dec", *a))))
    assert calls == [(kind, i, 4) for kind in ("enc", "dec") for i in range(1, 5)]  # after each tile
    assert out.shape == np.asarray(small_image).shape and psnr(np.asarray(small_image), out) > 25


def test_tiled_round_trip(tiny_tiles, small_image, model):
    data = anfcodec.encode(small_image, quality=4)
    c = fmt.unpack(data)
    assert len(c.tiles()) == 4 and len(c.streams()) == 4
    assert fmt.describe(data)["tiles"]["count"] == 4
    out = np.asarray(anfcodec.decode(data))
    assert out.shape == np.asarray(small_image).shape
    assert psnr(np.asarray(small_image), out) > 25
    # Every tile's symbols decode exactly as the encoder made them.
    rgb = np.asarray(small_image)
    for box, chunks in zip(c.tiles(), c.streams()):
        sym = model.compress(api._tensor(rgb, box, model), 4.0, model.default_refine(4.0))
        dec = api.chunks_to_symbols(model, chunks, box[2] - box[0], box[3] - box[1])
        assert np.array_equal(sym.latent.numpy(), dec.latent.numpy())


def test_tiled_lossless(tiny_tiles, small_image):
    out = anfcodec.decode(anfcodec.encode(small_image, quality=6, max_error=0))
    assert np.array_equal(np.asarray(out), np.asarray(small_image))


def test_bad_tiling_is_refused(tiny_tiles, small_image):
    c = fmt.unpack(anfcodec.encode(small_image, quality=2))

    def with_chunks(chunks):
        return fmt.pack(fmt.Container(c.header, chunks))

    bad_size = [(t, fmt.pack_tile_size(60, 64) if t == fmt.TILE_CHUNK else p) for t, p in c.chunks]
    huge_grid = [(t, fmt.pack_tile_size(64, 64) if t == fmt.TILE_CHUNK else p) for t, p in c.chunks]
    last_latn = max(i for i, (t, _) in enumerate(c.chunks) if t == b"LATN")
    missing = c.chunks[:last_latn] + c.chunks[last_latn + 1:]
    for chunks, match in ((bad_size, "multiple"), (missing, "4 LATN chunk")):
        with pytest.raises(fmt.FormatError, match=match):
            anfcodec.decode(with_chunks(chunks))
    big = fmt.Header(c.header.model_id, c.header.weights_hash, 2, 1 << 20, 1 << 20, "RGB", 64)
    with pytest.raises(fmt.FormatError, match="tiles declared"):
        fmt.describe(fmt.pack(fmt.Container(big, huge_grid)))


def test_tiling_starts_only_where_whole_coding_was_measured_over_the_bound():
    # docs/bench/memory.json is `make bench-memory`: whole-image peak RSS per size
    import json
    from pathlib import Path
    m = json.loads((Path(__file__).resolve().parent.parent / "docs/bench/memory.json").read_text())
    whole_mp = api.WHOLE_MAX_PIXELS / 1e6
    assert m["largest_within_mp"] >= whole_mp                     # coded whole: measured within 2 GB
    assert all(max(r["encode_mib"], r["decode_mib"]) <= m["bound_mib"] for r in m["rows"] if r["megapixels"] <= whole_mp)
    assert m["smallest_over_mp"] is not None and m["smallest_over_mp"] > whole_mp
