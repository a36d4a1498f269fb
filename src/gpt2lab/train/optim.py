"""The learning-rate schedule (warmup, then cosine decay) and AdamW with its parameter groups."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from .config import TrainConfig


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay.

    warmup: lr * (step + 1) / warmup_steps, reaching lr at the last warmup step;
    decay: from lr at ``warmup_steps`` down to min_lr at ``decay_steps``, half a cosine period;
    after ``decay_steps``: min_lr.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay for matrices and embeddings (dim >= 2), none for biases and
    LayerNorm gains, which set scales and offsets rather than store features. A tied tensor
    (``lm_head.weight`` is ``wte.weight``) appears once."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    for name, p in model.named_parameters():  # named_parameters yields a shared tensor once
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
        (decay_names if p.dim() >= 2 else no_decay_names).append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` with ``config``'s lr, betas and weight decay; the fused kernel
    (one pass over every tensor per step) where this build of PyTorch has one for the device, else
    the multi-tensor ``foreach`` one."""
    groups = param_groups(model, config.weight_decay)
    for g in groups:
        g.pop("names")
    betas = (config.beta1, config.beta2)
    try:
        return torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused AdamW for this device / dtype / version
        return torch.optim.AdamW(groups, lr=config.lr, betas=betas, eps=1e-8, foreach=device.type != "mps")


__all__ = ["lr_at", "param_groups", "make_optimizer"]
