"""Shared fixtures: small synthetic images, the shipped model, optional Kodak."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KODAK = Path(os.environ.get("ANFCODEC_DATA", ROOT.parent / "shared" / "data")) / "kodak"
SAMPLE = ROOT / "examples" / "sample.png"
# The backend choices persist per machine (arith.cache_path); tests, and the CLI processes they
# start, share one cache of their own, so a choice cached by earlier runs never skips a test's measuring.
os.environ.setdefault("ANFCODEC_ARITH_CACHE", str(Path(__import__("tempfile").mkdtemp(prefix="anfcodec-arith-"))))


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients, an edge and texture: photo-like enough to exercise the codec."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    r = 128 + 100 * np.sin(6 * xx + 2 * yy)
    g = 128 + 90 * np.cos(5 * yy - 3 * xx)
    b = np.where(xx + yy > 0.7, 200.0, 60.0)
    arr = np.stack([r, g, b], -1) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def small_image() -> Image.Image:
    return synthetic_image(100, 70)  # not a multiple of the padding: exercises crop-back


@pytest.fixture(scope="session")
def sample_image() -> Image.Image:
    return Image.open(SAMPLE).convert("RGB")


@pytest.fixture(scope="session")
def model():
    from anfcodec.zoo import default_model_id, load_model
    return load_model(default_model_id(), "cpu")


def kodak_images() -> list[Path]:
    return sorted(KODAK.glob("kodim*.png")) if KODAK.is_dir() else []


needs_kodak = pytest.mark.skipif(not kodak_images(), reason=f"Kodak not found at {KODAK}")


def run_cli(*args, stdin: bytes | None = None, env: dict | None = None):
    import subprocess
    return subprocess.run([sys.executable, "-m", "anfcodec.cli", *map(str, args)], input=stdin,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=300)


def installed_model(tmp_path_factory, model, model_id: str):
    """Generator for a module fixture: ``model`` exported as ``model_id`` into a copy of the shipped
    weights folder, which ``zoo`` uses until the fixture ends; yields the loaded (eval) model.

    For models that do not ship (grown or perturbed ones): they go through the real export and
    loading path, and the shipped releases stay available beside them.
    """
    import json
    import math
    import shutil
    import torch
    from anfcodec import zoo
    from anfcodec.training.export import export
    src, wdir = zoo.WEIGHTS_DIR, tmp_path_factory.mktemp("weights")
    man = zoo.manifest(src)
    for entry in [*man["models"].values(), *man.get("previous", [])]:
        for f in (entry["file"], *([entry["decoder"]["file"]] if "decoder" in entry else [])):
            shutil.copy(src / f, wdir / f)
    (wdir / zoo.MANIFEST).write_text(json.dumps(man))
    ckpt = wdir / "model.ckpt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict(),
                "counters": {"step": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0, "best_val": math.inf}}, ckpt)
    export(ckpt, wdir, model_id, make_default=False)
    mp = pytest.MonkeyPatch()
    mp.setattr(zoo, "WEIGHTS_DIR", wdir)
    yield zoo.load_model(model_id, "cpu")
    mp.undo()
