"""Where tensors live: one rule for every command that takes ``--device``."""

from __future__ import annotations

import torch

from .errors import ConfigError


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA, then Apple's MPS, then the CPU. Otherwise ``cpu``, ``cuda``, ``cuda:N`` or ``mps``,
    checked to exist here (ConfigError with what to use instead)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this PyTorch sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not mps_available():
        raise ConfigError("--device mps: Apple's Metal backend is not available here; use --device cpu")
    return device
