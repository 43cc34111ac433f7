"""Rate-distortion metrics: PSNR, MS-SSIM and Bjontegaard delta rate."""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window: the smaller side must exceed 160 pixels


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """MS-SSIM of two 8-bit RGB images [H, W, 3] (pytorch-msssim: 5 scales, Gaussian window 11, the
    weights of Wang et al. 2003), or None for images too small for five scales."""
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def tensor(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
    return float(_ms_ssim(tensor(a), tensor(b), data_range=255.0))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in decibels, -10 log10(1 - MS-SSIM): the scale on which the community plots it."""
    return float("inf") if value >= 1 else float(-10 * np.log10(1 - value))


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float | None:
    """Average rate difference (%) of test vs anchor at equal PSNR (Bjontegaard, piecewise cubic).

    log-rate is interpolated as a monotone piecewise-cubic (PCHIP) function of
    PSNR and integrated over the overlapping PSNR range. Negative = test saves
    rate. None when the curves do not overlap.
    """
    from scipy.interpolate import PchipInterpolator
    from scipy.integrate import quad

    def curve(rate, q):
        order = np.argsort(q)
        q, lr = np.asarray(q, float)[order], np.log(np.asarray(rate, float))[order]
        keep = np.concatenate([[True], np.diff(q) > 0])  # PCHIP needs strictly increasing x
        return q[keep], lr[keep]

    qa, la = curve(rate_anchor, psnr_anchor)
    qt, lt = curve(rate_test, psnr_test)
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    if hi <= lo or len(qa) < 2 or len(qt) < 2:
        return None
    fa, ft = PchipInterpolator(qa, la), PchipInterpolator(qt, lt)
    avg = (quad(ft, lo, hi, limit=200)[0] - quad(fa, lo, hi, limit=200)[0]) / (hi - lo)
    return float((np.exp(avg) - 1) * 100)
