"""loss.png: the training curve of a run, drawn on a matplotlib ``Figure`` of its own (no pyplot,
no backend switch: a notebook's own plots are left alone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from ..tasks import TASKS


def task_metric_names(records: list[dict[str, Any]]) -> list[str]:
    """The scores among the records' keys: a benchmark's (``--eval-task``: ``hellaswag_acc_norm``, ...)
    and a classifier's held-out accuracy (``--task classify``: ``val_acc``)."""
    return sorted({k for r in records for k in r if any(k.startswith(task + "_") for task in TASKS) or k == "val_acc"})


def is_accuracy(name: str) -> bool:
    """Whether a score is an accuracy (``hellaswag_acc_norm``, ``val_acc``: 0..1, higher is better) rather
    than a perplexity or a loss."""
    return name.endswith(("_acc", "_acc_norm"))


def plot_metrics(records: list[dict[str, Any]], path: str | os.PathLike, grad_clip: float | None = None) -> Path:
    """loss.png: training loss per step (and its running mean), validation loss where measured; below
    it the gradient norm of the logged steps (a norm that climbs or spikes warns before the loss does);
    below that, when the run scores a benchmark, its metrics at each evaluation (accuracies on the left
    axis, perplexities and losses on the right). ``grad_clip``: the run's clipping threshold, drawn on the
    norm's panel."""
    fig = metrics_figure(records, grad_clip)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def metrics_figure(records: list[dict[str, Any]], grad_clip: float | None = None) -> Any:
    """The matplotlib ``Figure`` that ``plot_metrics`` saves."""
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    norms = [(r["step"], r["grad_norm"]) for r in records if r.get("grad_norm") is not None]
    scores = task_metric_names(records)
    heights = [4] + ([1.5] if norms else []) + ([3] if scores else [])  # inches: the loss, the norm, the scores
    fig = Figure(figsize=(7, sum(heights)), dpi=100, layout="tight")
    panels = list(np.atleast_1d(fig.subplots(len(heights), 1, sharex=True, height_ratios=heights)))
    axes = list(panels)
    ax = axes.pop(0)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train (per step)")
    means, k = smoothed(losses)
    if k > 1:
        ax.plot(steps[k - 1 :], means, color="tab:blue", linewidth=2, label=f"train (mean of {k})")
    if val:
        val_steps, val_losses = zip(*val)
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", linewidth=2, markersize=4, label="validation")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    if norms:
        norm_ax = axes.pop(0)
        norm_steps, values = zip(*norms)
        norm_ax.plot(norm_steps, values, color="tab:gray", linewidth=1)
        if grad_clip:
            norm_ax.axhline(grad_clip, color="tab:red", linestyle="--", linewidth=1, label=f"--grad-clip {grad_clip:g}: scaled down above")
            norm_ax.legend(fontsize="small")
        if min(values) > 0 and max(values) / min(values) > 20:  # an early spike would flatten the rest
            norm_ax.set_yscale("log")
        norm_ax.set_ylabel("gradient norm")
        norm_ax.grid(alpha=0.3)
    if scores:
        _plot_scores(axes.pop(0), records, scores)
    panels[-1].set_xlabel("step")
    return fig


def smoothed(values: list[float]) -> tuple[list[float], int]:
    """The running mean of ``values`` over a twentieth of them (at least 2): the trend of noisy step
    losses. Returns the means (``len(values) - k + 1`` of them) and k; the values unchanged, k = 1,
    when there are fewer than 10."""
    if len(values) < 10:
        return list(values), 1
    k = max(2, len(values) // 20)
    return list(np.convolve(values, np.ones(k) / k, mode="valid")), k


def plot_runs(runs: list[tuple[str, list[dict[str, Any]]]], path: str | os.PathLike, x: str = "step") -> Path:
    """Several runs' curves on one chart: each run's smoothed train loss (a line) and its validation
    loss (dots on a dashed line) in one colour; ``x`` is ``"step"``, ``"epoch"`` or ``"tokens"`` (every
    record must have it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100, layout="tight")
    ax = fig.subplots()
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
               "tab:olive", "tab:cyan"]
    for i, (name, records) in enumerate(runs):
        colour = colours[i % len(colours)]
        logged = [r for r in records if "loss" in r]
        means, k = smoothed([r["loss"] for r in logged])
        ax.plot([r[x] for r in logged[k - 1 :]], means, color=colour, linewidth=1.5, label=f"{name} train")
        val = [(r[x], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        if val:
            xs, ys = zip(*val)
            ax.plot(xs, ys, "o--", color=colour, linewidth=1, markersize=4, label=f"{name} val")
    ax.set_xlabel("training tokens" if x == "tokens" else x)
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _plot_scores(ax: Any, records: list[dict[str, Any]], names: list[str]) -> None:
    """Benchmark metrics per evaluation: accuracies (0..1) on ``ax``, the rest on a twin axis."""
    accuracies = [n for n in names if is_accuracy(n)]
    others = [n for n in names if n not in accuracies]
    axes = [(ax, accuracies, "accuracy")] + ([(ax.twinx(), others, "perplexity / loss")] if others else [])
    colours = iter(["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"])
    lines = []
    for axis, group, label in axes:
        for name in group:
            points = [(r["step"], r[name]) for r in records if r.get(name) is not None]
            steps, values = zip(*points)
            lines += axis.plot(steps, values, "o-", color=next(colours), linewidth=2, markersize=4, label=name)
        axis.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines])


__all__ = ["plot_metrics", "metrics_figure", "is_accuracy", "plot_runs", "smoothed", "task_metric_names"]
