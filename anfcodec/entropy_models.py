"""Entropy models: compressai's EntropyBottleneck and GaussianConditional, and the scale table.

Imported here once, quietly: compressai decorates helpers with
``torch.jit.script``, which recent PyTorch deprecates with a FutureWarning
on every import that users should not have to see.
"""
from __future__ import annotations

import math
import warnings

import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.layers import GDN
    from compressai.models.utils import update_registered_buffers

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 256


def scale_table() -> torch.Tensor:
    """Log-spaced table of Gaussian scales (CompressAI's range), rounded to a dyadic grid.

    256 levels instead of CompressAI's 64: snapping a scale up to the next entry
    then widens it by at most 3.1%, which costs well under 1% in rate (64 levels
    cost several percent at low rates). Rounding to multiples of 2^-16 makes
    the table identical on every machine even if exp/linspace differ in the
    last ulp; the table is also stored in the weights.
    """
    t = torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS, dtype=torch.float64))
    return torch.round(t * 65536) / 65536


__all__ = ["EntropyBottleneck", "GaussianConditional", "GDN", "update_registered_buffers", "scale_table",
           "SCALE_MIN", "SCALE_MAX", "SCALE_LEVELS"]
