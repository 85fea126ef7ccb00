"""Choosing the compute device, shared by training and evaluation."""
from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an absent CUDA is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for but no CUDA GPU is available; "
                              "use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
