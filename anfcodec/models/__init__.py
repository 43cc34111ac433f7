"""Model family registry: architecture name (a stable string) -> class."""
from .anfic import ANFIC, ANFICConfig

ARCHITECTURES = {ANFIC.arch: ANFIC}


def build_model(config: dict):
    arch = config.get("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].from_config(config)


__all__ = ["ANFIC", "ANFICConfig", "ARCHITECTURES", "build_model"]
