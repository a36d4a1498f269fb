"""PNG pictures of attention, drawn with matplotlib's Agg renderer (no display needed).

Three pictures:
  * ``plot_head``: one head's (T, T) pattern with the tokens on both axes;
  * ``plot_grid``: every head of every layer as a thumbnail, layers down, heads across;
  * ``plot_layer_means``: the mean over heads, one panel per layer.

Every function writes its file atomically and returns the path. Image sizes are fixed by the
``*_size`` functions (pixels), so a caller knows what it gets without opening the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..attention import visible
from ..files import atomic_write

if TYPE_CHECKING:
    from ..attention import AttentionResult

DPI = 100
CMAP = "Blues"
MAX_TICK_LABELS = 64  # beyond this many tokens, label every n-th one so labels stay readable


def _figure(width_in: float, height_in: float):
    # Figure + FigureCanvasAgg directly, not pyplot: no global state, no GUI backend, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    import matplotlib

    # no bbox_inches="tight": the pixel size stays exactly figsize * DPI, as documented
    with matplotlib.rc_context({"text.parse_math": False}):  # a token with "$" is text, not TeX
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _cmap():
    import matplotlib

    return matplotlib.colormaps[CMAP].with_extremes(bad="white")


def _norm():
    # colour = sqrt(weight), as on the HTML page: weights of 0.05 stay visible next to a 1.0,
    # and the colour bar still reads in plain weights
    from matplotlib.colors import PowerNorm

    return PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)


def _label(text: str, limit: int = 14) -> str:
    s = visible(text)
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


# ---------------------------------------------------------------------------------------------


def head_size(T: int) -> tuple[int, int]:
    """Pixel size (width, height) of ``plot_head`` for T tokens: square, growing with T, 6..16 inches."""
    side = min(16.0, max(6.0, 2.5 + 0.16 * T))
    return round(side * DPI), round(side * DPI)


def plot_head(result: AttentionResult, path: str | Path, layer: int = 0, head: int | None = 0, *, title: str | None = None) -> Path:
    """One head's attention (or a layer's mean over heads, ``head=None``) as a heatmap, colour ~ sqrt(weight).

    Rows are queries (the token that looks), columns are keys (the token looked at); both axes carry
    the token text with whitespace made visible.
    """
    import matplotlib

    result.check_head(layer, head)
    T = len(result)
    import numpy as np

    pattern = result.pattern(layer, head).numpy()  # (T, T)
    # the future (key after query) is masked, not "zero attention": draw it blank
    pattern = np.ma.masked_where(np.triu(np.ones((T, T), dtype=bool), k=1), pattern)
    w, h = head_size(T)
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _figure(w / DPI, h / DPI)
        ax = fig.add_axes((0.18, 0.18, 0.68, 0.72))
        im = ax.imshow(pattern, cmap=_cmap(), norm=_norm(), interpolation="nearest")
        step = max(1, math.ceil(T / MAX_TICK_LABELS))
        ticks = list(range(0, T, step))
        labels = [f"{_label(result.tokens[i])} {i}" if step > 1 else _label(result.tokens[i]) for i in ticks]
        axis_pt = 0.72 * h / DPI * 72  # the axes' height in points
        fontsize = max(5.0, min(10.0, 0.75 * axis_pt / max(len(ticks), 1)))
        ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, labels, fontsize=fontsize)
        ax.set_xlabel("key: the token attended to")
        ax.set_ylabel("query: the token attending")
        cax = fig.add_axes((0.88, 0.18, 0.025, 0.72))
        fig.colorbar(im, cax=cax, label="attention weight")
        default = result.describe_source(layer, head)
        fig.suptitle(title or f"{result.model_name + ': ' if result.model_name else ''}{default}", fontsize=12)
        return _save(fig, path)


def grid_size(n_layer: int, n_head: int) -> tuple[int, int]:
    """Pixel size of ``plot_grid``: about 1.1 inch per thumbnail plus margins, capped at 20 x 30 inches."""
    cell = min(1.1, 18.0 / n_head, 27.0 / n_layer)
    return round((cell * n_head + 1.2) * DPI), round((cell * n_layer + 1.0) * DPI)


def plot_grid(result: AttentionResult, path: str | Path, *, title: str | None = None) -> Path:
    """Every head of every layer, layers as rows and heads as columns, colour ~ sqrt(weight),
    and tagged in the corner with its label from the statistics ("prev", "ind", "self", "sink", "broad")."""
    import matplotlib

    L, H = result.n_layer, result.n_head
    w, h = grid_size(L, H)
    probs = result.probs.numpy()
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _figure(w / DPI, h / DPI)
        left, bottom = 0.7 / (w / DPI), 0.3 / (h / DPI)
        cw, ch = (1 - left - 0.5 / (w / DPI)) / H, (1 - bottom - 0.7 / (h / DPI)) / L
        short = {"previous-token": "prev", "induction": "ind", "current-token": "self", "first-token sink": "sink", "broad": "broad", "mixed": ""}
        for layer in range(L):
            for head in range(H):
                ax = fig.add_axes((left + head * cw, 1 - 0.7 / (h / DPI) - (layer + 1) * ch, cw * 0.94, ch * 0.94))
                p = probs[layer, head]
                ax.imshow(p, cmap=CMAP, norm=_norm(), interpolation="nearest", aspect="auto")
                ax.set_xticks([])
                ax.set_yticks([])
                tag = short.get(result.stats.labels[layer][head], "")
                if tag:
                    ax.text(0.97, 0.97, tag, transform=ax.transAxes, ha="right", va="top", fontsize=6, color="#b00")
                if layer == 0:
                    ax.set_title(f"h{head}", fontsize=7, pad=2)
                if head == 0:
                    ax.set_ylabel(f"L{layer}", fontsize=7, rotation=0, ha="right", va="center")
        name = f"{result.model_name}: " if result.model_name else ""
        fig.suptitle(title or f"{name}all heads ({L} layers x {H} heads, {len(result)} tokens)", fontsize=11)
        return _save(fig, path)


def layer_means_size(n_layer: int) -> tuple[int, int]:
    """Pixel size of ``plot_layer_means``: up to 6 panels of 3 inches per row."""
    cols = min(n_layer, 6)
    rows = math.ceil(n_layer / cols)
    return round((3.0 * cols + 0.6) * DPI), round((3.0 * rows + 0.7) * DPI)


def plot_layer_means(result: AttentionResult, path: str | Path, *, title: str | None = None) -> Path:
    """The mean over heads of each layer, one panel per layer: how attention moves through depth."""
    import matplotlib

    L = result.n_layer
    w, h = layer_means_size(L)
    cols = min(L, 6)
    means = result.probs.mean(1).numpy()  # (L, T, T)
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _figure(w / DPI, h / DPI)
        W, Hh = w / DPI, h / DPI
        for layer in range(L):
            r, c = divmod(layer, cols)
            bottom = Hh - 0.75 - 3.0 * (r + 1) + 0.35  # inches from the bottom edge: a title band on top
            ax = fig.add_axes(((0.3 + 3.0 * c + 0.3) / W, bottom / Hh, 2.5 / W, 2.5 / Hh))
            p = means[layer]
            ax.imshow(p, cmap=CMAP, norm=_norm(), interpolation="nearest")
            ax.set_title(f"layer {layer}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        name = f"{result.model_name}: " if result.model_name else ""
        fig.suptitle(title or f"{name}mean attention over heads, per layer ({len(result)} tokens)", fontsize=11)
        return _save(fig, path)
