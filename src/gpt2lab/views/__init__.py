"""Pictures of what the model does: PNG plots (matplotlib, Agg) and self-contained HTML pages.

    >>> from gpt2lab.views import plot_head, plot_grid, plot_layer_means, write_page, fragment
    >>> plot_head(att, "head.png", layer=5, head=1)     # att = gpt2lab.attention(model, tok, text)
    >>> write_page(att, "attention.html")                # open it from disk; no network needed
    >>> frag = fragment(att, element_id="attn1")         # the same view, to embed in another page
    >>> frag.fragment_html                               # <style> + <div> + data + <script>

``save_attention(att, out_dir)`` writes all of them at once (what ``gpt2lab attention`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .html import Fragment, fragment, page_data, render_page, script_json, write_page
from .plots import grid_size, head_size, layer_means_size, plot_grid, plot_head, plot_layer_means

if TYPE_CHECKING:
    from ..attention import AttentionResult


def save_attention(
    result: AttentionResult,
    out_dir: str | Path,
    *,
    layer: int | None = None,
    head: int | None = None,
    top_k: int | None = None,
) -> dict[str, Path]:
    """Write ``head.png`` (``layer``/``head``, default layer 0 head 0; ``head=None`` with a layer: the
    layer's mean), ``grid.png``, ``layers.png`` and ``attention.html`` into ``out_dir``; return their paths."""
    result.check_head(layer, head)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    show_layer = 0 if layer is None else layer
    show_head = head if (head is not None or layer is not None) else 0
    return {
        "head": plot_head(result, out / "head.png", show_layer, show_head),
        "grid": plot_grid(result, out / "grid.png"),
        "layers": plot_layer_means(result, out / "layers.png"),
        "html": write_page(result, out / "attention.html", top_k=top_k, layer=show_layer, head=show_head),
    }


__all__ = [
    "Fragment",
    "fragment",
    "page_data",
    "render_page",
    "script_json",
    "write_page",
    "plot_head",
    "plot_grid",
    "plot_layer_means",
    "head_size",
    "grid_size",
    "layer_means_size",
    "save_attention",
]
