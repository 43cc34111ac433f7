"""Model family registry: architecture name (a stable string) -> class."""
from .anfic import ANFIC, ANFICConfig
from .checkerboard import ANFICCheckerboard, CheckerboardConfig
from .msanfic import MSANFIC, MSANFICConfig

ARCHITECTURES = {ANFIC.arch: ANFIC, ANFICCheckerboard.arch: ANFICCheckerboard, MSANFIC.arch: MSANFIC}


def build_model(config: dict):
    arch = config.get("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].from_config(config)


__all__ = ["ANFIC", "ANFICConfig", "ANFICCheckerboard", "CheckerboardConfig", "MSANFIC", "MSANFICConfig", "ARCHITECTURES", "build_model"]
