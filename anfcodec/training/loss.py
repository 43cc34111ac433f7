"""The ANFIC rate-distortion objective, per sample so each can have its own lambda."""
from __future__ import annotations


import torch


def rd_loss(out: dict, x: torch.Tensor, lmbda: torch.Tensor, x2_weight: float = 0.01) -> dict:
    """R + lambda*255^2*MSE(x, x_hat) + x2_weight*lambda*255^2*mean(x2^2), averaged over the batch."""
    b, _, h, w = x.shape
    bits = sum((-torch.log2(lik.clamp_min(1e-9))).reshape(b, -1).sum(1) for lik in out["likelihoods"].values())
    bpp = bits / (h * w)
    mse = ((out["x_hat"] - x) ** 2).reshape(b, -1).mean(1)
    x2 = (out["x2"] ** 2).reshape(b, -1).mean(1)
    scale = lmbda * 255.0**2
    # aux_loss: a model's extra training objective (MS-ANFIC's coarse scale coded everywhere)
    loss = bpp + scale * (mse + x2_weight * x2) + out.get("aux_loss", 0.0)
    return {
        "loss": loss.mean(),
        "bpp": bpp.detach(),
        "mse": mse.detach(),
        "psnr": (10 * torch.log10(1.0 / mse.detach().clamp_min(1e-10))),
        "x2": x2.detach(),
    }
