"""Rate-distortion metrics: PSNR and Bjontegaard delta rate."""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


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
