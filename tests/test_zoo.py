"""Shipped weights: a new release under the same model id keeps older files decodable."""
import contextlib
import math

import numpy as np
import pytest
import torch

from anfcodec import api, zoo
from anfcodec.models import ANFIC, ANFICConfig
from anfcodec.training.export import export


def _checkpoint(path, seed: int):
    torch.manual_seed(seed)
    model = ANFIC(ANFICConfig(N=16, M=64, hyper_N=16, qe_width=8))
    with torch.no_grad():  # non-trivial branches, different per release
        for p in model.parameters():
            if p.dim() == 4 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    torch.save({"config": model.config.to_dict(), "model": model.state_dict(),
                "counters": {"step": seed, "cpu_seconds": 0.0, "wall_seconds": 0.0, "best_val": math.inf}}, path)
    return path


def test_files_of_a_replaced_release_still_decode(tmp_path, monkeypatch, small_image):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    first = export(_checkpoint(tmp_path / "a.ckpt", 1), tmp_path, "tiny")
    old_file = api.encode(small_image, quality=3, model_id="tiny")
    old_pixels = np.asarray(api.decode(old_file))
    second = export(_checkpoint(tmp_path / "b.ckpt", 2), tmp_path, "tiny")
    assert first["sha256"] != second["sha256"] and first["file"] != second["file"]
    man = zoo.manifest(tmp_path)
    assert man["models"]["tiny"]["sha256"] == second["sha256"]
    assert [(p["id"], p["sha256"]) for p in man["previous"]] == [("tiny", first["sha256"])]
    assert np.array_equal(np.asarray(api.decode(old_file)), old_pixels)      # the old release decodes it
    new_file = api.encode(small_image, quality=3, model_id="tiny")
    assert new_file[:60] != old_file[:60]                                    # new files name the new hash
    with pytest.raises(zoo.ModelNotFound, match="install the matching"):
        zoo.find_entry("tiny", bytes(8), tmp_path)


KEPT_FILES = sorted((zoo.Path(__file__).parent / "data").glob("*.anf"))


@pytest.mark.parametrize("backend", [None, "int8", "float32", "float64", "conv32", "winograd"])
@pytest.mark.parametrize("path", KEPT_FILES, ids=lambda p: p.stem)
def test_kept_files_of_every_shipped_model_decode_to_their_recorded_pixels(path, backend):
    # One small file per shipped model and release, written when it shipped, with its decoded PNG;
    # in the backend this process measured fastest (None) and in each exact backend forced.
    from PIL import Image

    from anfcodec import arith
    if backend and backend not in [be.name for be in arith.backends()]:
        pytest.skip(f"no exact {backend} product on this CPU")
    expected = np.asarray(Image.open(path.with_suffix(".png")))
    with arith.force(backend) if backend else contextlib.nullcontext():
        assert np.array_equal(np.asarray(api.decode(path.read_bytes())), expected)


def test_a_model_exported_beside_the_default_leaves_the_default(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    export(_checkpoint(tmp_path / "a.ckpt", 1), tmp_path, "best")
    export(_checkpoint(tmp_path / "b.ckpt", 2), tmp_path, "fast", make_default=False)
    man = zoo.manifest(tmp_path)
    assert man["default"] == "best" and set(man["models"]) == {"best", "fast"}


def test_the_default_release_with_ten_qualities_codes_one_to_eight_as_the_one_it_extends(small_image):
    # 12561f1f is bf14c6ef plus qualities 9-10: its qualities 1-8 must give the same symbols and pixels.
    new = zoo.load_model("anfic-ckbd-n128-m256", weights_hash=bytes.fromhex("12561f1fed85f9db"))
    old = zoo.load_model("anfic-ckbd-n128-m256", weights_hash=bytes.fromhex("bf14c6ef74d83a4a"))
    assert (new.num_qualities, old.num_qualities) == (10, 8)
    x = api._tensor(np.asarray(small_image), (0, 0, small_image.width, small_image.height), new)
    for quality in (1, 4.5, 8):
        a, b = new.compress(x, quality, new.default_refine(quality)), old.compress(x, quality, old.default_refine(quality))
        assert torch.equal(a.latent, b.latent) and torch.equal(a.hyper, b.hyper), quality
        assert torch.equal(new.decompress(a, quality), old.decompress(b, quality)), quality
    assert not torch.equal(new.compress(x, 10, 1).latent, new.compress(x, 8, 1).latent)
