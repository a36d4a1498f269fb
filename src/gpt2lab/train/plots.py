"""loss.png: the training curve of a run, drawn on a matplotlib ``Figure`` of its own (no pyplot,
no backend switch: a notebook's own plots are left alone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write


def plot_metrics(records: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """loss.png: training loss per step (and its running mean), validation loss where measured."""
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    fig = Figure(figsize=(7, 4), dpi=100, layout="tight")
    ax = fig.subplots()
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train (per step)")
    if len(losses) >= 10:
        k = max(2, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="tab:blue", linewidth=2, label=f"train (mean of {k})")
    if val:
        val_steps, val_losses = zip(*val)
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", linewidth=2, markersize=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


__all__ = ["plot_metrics"]
