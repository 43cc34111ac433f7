"""The foundation's round-trip contract, shared by the small-image and Kodak tests."""
from __future__ import annotations

import numpy as np
import torch

from anfcodec import api
from anfcodec import container as fmt
from anfcodec.imageio import pad_edge
from anfcodec.metrics import psnr


def check_round_trip(model, img, quality: float, refine: int | None = None) -> dict:
    """Encode and decode ``img``; assert the contract; return bpp and PSNR.

    With encoder refinement (the default at high qualities) the latent is no longer the
    training pass's, so the checks against ``forward`` (2 and 3) apply to ``refine=0`` only.
    """
    rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    steps = model.default_refine(quality) if refine is None else refine
    data = api.encode(img, quality=quality, refine=steps, model_id=model.model_id)
    c = fmt.unpack(data)

    # 1. The decoder's symbols equal the encoder's exactly.
    x = pad_edge(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255, model.pad_multiple)
    enc = model.compress(x, quality, steps)
    dec = api.chunks_to_symbols(model, c.streams()[0], w, h)
    assert_same_symbols(enc, dec)
    decoded = np.asarray(api.decode(data).convert("RGB"))
    if steps:
        return {"bpp": 8 * len(data) / (h * w), "psnr": psnr(rgb, decoded), "bytes": len(data)}

    # 2. The decoded image equals the model's own eval-mode reconstruction (within 1 level).
    with torch.no_grad():
        out = model(x, torch.tensor([quality]))
    ref = (out["x_hat"].clamp(0, 1)[0, :, :h, :w] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(decoded.astype(int) - ref.astype(int)).max() <= 1

    # 3. The file is as large as the model's estimated rate (entropy coding works).
    est_bits = sum(float((-torch.log2(l)).sum()) for l in out["likelihoods"].values())
    coded = c.streams()[0]
    streams = sum(len(coded[t]) for t in (fmt.HYPER_CHUNK, fmt.COARSE_HYPER_CHUNK) if t in coded) + sum(
        len(fmt.unpack_latent(coded[t])[2]) for t in (fmt.LATENT_CHUNK, fmt.COARSE_LATENT_CHUNK) if coded.get(t))
    overhead = len(data) - streams
    est_bytes = est_bits / 8 + overhead
    assert abs(len(data) - est_bytes) <= max(0.03 * est_bytes, 200), (len(data), est_bytes)
    return {"bpp": 8 * len(data) / (h * w), "psnr": psnr(rgb, decoded), "bytes": len(data)}


def assert_same_symbols(enc, dec) -> None:
    """Encoder and decoder symbols are identical, for either model family."""
    pairs = [("", enc, dec)]
    if hasattr(enc, "split"):
        assert torch.equal(enc.split, dec.split), "split maps differ"
        pairs = [("fine ", enc.fine, dec.fine), ("coarse ", enc.coarse, dec.coarse)]
    for name, a, b in pairs:
        assert torch.equal(a.hyper, b.hyper), f"{name}hyperlatent symbols differ"
        assert torch.equal(a.latent, b.latent), f"{name}latent symbols differ"
