"""Where tensors live and in what precision: one rule for every command that takes ``--device``
or ``--dtype``.

Every command defaults to ``--device auto``: CUDA, then Apple's MPS, then the CPU. Precision
names are ``fp32``, ``bf16`` and ``fp16`` (``float32``, ``bfloat16``, ``float16`` and ``half``
are accepted too); ``auto`` means bf16 on a GPU that has it, else fp32.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

import torch

from .errors import ConfigError

DEFAULT_DEVICE = "auto"

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(name: str | torch.device | None = DEFAULT_DEVICE) -> torch.device:
    """``"auto"`` (or ``None``): CUDA, then Apple's MPS, then the CPU. Otherwise ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``, checked to exist here (ConfigError with what to use instead)."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
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


def parse_dtype(dtype: torch.dtype | str | None, device: torch.device | None = None) -> torch.dtype:
    """A precision name (or a ``torch.dtype``, passed through) as a ``torch.dtype``; ``None`` is fp32.

    ``"auto"`` is bf16 on a CUDA GPU that supports it and fp32 everywhere else (CPUs and MPS:
    bf16 there is emulated or partial, so slower rather than faster for most products).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cuda_bf16 = device is not None and device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use fp32, bf16 or fp16")
    return DTYPES[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Mixed precision: matrix products in ``dtype``, reductions and losses in fp32 (autocast's
    own per-operation lists). A no-op for fp32 or ``None``, so callers need no branch."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def attention_kernels(device: torch.device) -> AbstractContextManager:
    """Which fused attention ``F.scaled_dot_product_attention`` runs: on Hopper GPUs (H100, H200:
    compute capability 9.x) cuDNN's before FlashAttention-2, else PyTorch's own order.

    On Hopper cuDNN's kernels use the chip's own matrix instructions: on an H200, forward and
    backward at GPT-2's training shape took 0.437 ms against FlashAttention-2's 0.661 ms
    (``benchmarks/gpu_check.py``). PyTorch 2.11 already tried cuDNN first there; versions that try
    FlashAttention-2 first get the faster kernel from this too. A preference, not a restriction:
    a call cuDNN cannot serve falls back down the list. The training step runs under it; the
    backward pass follows the kernel its forward chose. ``GPT2LAB_CUDNN_ATTENTION=0`` keeps PyTorch's order.
    """
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9 or os.environ.get("GPT2LAB_CUDNN_ATTENTION") == "0":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)
