"""Entropy models: compressai's EntropyBottleneck and GaussianConditional, and the scale table.

compressai is imported here, once, for the few blocks anfcodec uses (also
GDN and ``update_registered_buffers``), in two ways that spare every encode
and decode:

- its package ``__init__``s (``compressai`` and ``compressai.models``) import
  every dataset, model and registry, and through them torch_geometric and
  torch._dynamo: 2.0 s and 220 MB of a CLI call, for code anfcodec never runs.
  They are deferred (``_DeferredPackage``): the submodules anfcodec needs load
  alone, and the rest of compressai initialises the moment anyone reaches for
  a name it has not loaded, so other code in the process sees all of it;
- its entropy models import ``scipy.stats`` (0.55 s of a CLI call) for one
  quantile function that only table building calls; that package is deferred
  the same way, and encoding and decoding with built tables never reach it;
- it decorates helpers with ``torch.jit.script``, which recent PyTorch
  deprecates with a FutureWarning on every import that users should not see.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
import warnings

import torch


class _DeferredPackage(types.ModuleType):
    """A package whose own ``__init__`` runs on first access to a name it does not have yet.

    Importing one of its submodules needs only ``__path__``, which it has.
    """

    def __getattr__(self, name: str):
        if self.__dict__.get("_anfcodec_initialised"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        self._anfcodec_initialised = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def _defer_package_init(name: str, **names) -> None:
    """Register package ``name`` (not yet imported) without running its ``__init__``; ``names``
    are set on it meanwhile (its ``__init__`` replaces them when it runs)."""
    spec = importlib.util.find_spec(name)
    module = _DeferredPackage(name)
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    module.__path__, module.__package__ = list(spec.submodule_search_locations), name
    module.__dict__.update(names)
    sys.modules[name] = module


if "scipy.stats" not in sys.modules:
    _defer_package_init("scipy.stats")
    sys.modules["scipy"].stats = sys.modules["scipy.stats"]  # what importing the submodule sets
if "compressai" not in sys.modules:
    # Constructing an entropy model asks the package for its default coder: the values compressai's
    # __init__ gives these (its rANS coder, ``compressai.ans``, imported below).
    _defer_package_init("compressai", get_entropy_coder=lambda: "ans", available_entropy_coders=lambda: ["ans"])
    _defer_package_init("compressai.models")
    import compressai.ans  # noqa: F401  (sets the package's ``ans``)
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
