"""The interactive attention page: one self-contained HTML file (no CDN, no network, works from file://).

The page is built from three package files, ``attention.html`` (the page shell), ``attention.css`` and
``attention.js`` (a ``GPT2LabAttention.mount(element, data)`` function that builds the whole view with
DOM calls), plus the data as JSON. Two ways in:

  * ``write_page(result, path)`` writes the full page;
  * ``fragment(result)`` returns the pieces (``css``, ``js``, ``html``, ``data_json``) and ``fragment_html``
    one ``<div>`` + ``<style>`` + ``<script>`` block, for embedding the same view in another page (several
    views may share a page: each mounts into its own element).

Safety: token text is data, never markup. The JSON is embedded in a ``<script type="application/json">``
with ``<``, ``>``, ``&``, U+2028 and U+2029 written as ``\\uXXXX`` escapes, so no token can close the
script element; the script inserts every string with ``textContent`` and never uses ``innerHTML``.

Size: attention is stored sparsely as, for every layer, head and query row, the heaviest keys (uint16
positions) and their weights (uint8, 1/255 steps; weights under 1/510 are dropped), base64-encoded. Short
inputs keep every key; long ones keep the ``top_k`` heaviest per row, so 1,000 tokens of a 12 x 12
model stay a few megabytes and draw in milliseconds.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..attention import STAT_DESCRIPTIONS, visible
from ..errors import InputError
from ..files import atomic_write_bytes

if TYPE_CHECKING:
    from ..attention import AttentionResult

FULL_ROWS_BUDGET = 2_000_000  # keep whole rows when L * H * T * (T + 1) / 2 entries fit in this
DEFAULT_TOP_K = 8  # edges kept per row beyond that budget
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def asset(name: str) -> str:
    """A file shipped in ``gpt2lab/views`` (page shell, CSS, JS), as text."""
    return resources.files("gpt2lab.views").joinpath(name).read_text(encoding="utf-8")


def check_element_id(element_id: str) -> str:
    """An id safe to write into markup unescaped: a letter, then letters, digits, '-' or '_' (at most 64)."""
    if not _ID_RE.match(element_id):
        raise InputError(f"element_id must be a letter then letters, digits, '-' or '_' (at most 64), got {element_id!r}")
    return element_id


def fill_page(css: str, body: str, data: str, js: str) -> str:
    """The shared page shell (``attention.html``) with its four parts in place. One pass over the template:
    text put in for one placeholder is never read as another."""
    parts = {"CSS": css, "BODY": body, "DATA": data, "JS": js}
    return re.sub(r"\{\{(CSS|BODY|DATA|JS)\}\}", lambda m: parts[m.group(1)], asset("attention.html"))


def script_json(obj) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>``, ``&``, U+2028 or U+2029 appears raw.

    ``</script>`` in a token would otherwise end the element and whatever follows would run as markup;
    U+2028/2029 are line terminators in older JavaScript. ``JSON.parse`` reads the escapes back exactly.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return text


def edges_per_row(n_layer: int, n_head: int, T: int, top_k: int | None) -> int:
    """How many keys per query row the page keeps: ``top_k`` if given, else every key when the whole
    tensor is small (``FULL_ROWS_BUDGET``), else ``DEFAULT_TOP_K``."""
    if top_k is not None:
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}")
        return min(top_k, T)
    return T if n_layer * n_head * T * (T + 1) // 2 <= FULL_ROWS_BUDGET else DEFAULT_TOP_K


def sparse_rows(probs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` heaviest keys of every row of ``probs`` (L, H, T, T), quantised to 1/255.

    Returns (offsets uint32 (L*H*T + 1,), keys uint16/uint32, weights uint8): row r of the flattened
    (L, H, T) grid owns ``keys[offsets[r]:offsets[r+1]]``, sorted by key position.
    """
    L, H, T, _ = probs.shape
    k = min(k, T)
    w, j = probs.reshape(L * H * T, T).topk(k, dim=-1)  # (R, k) heaviest first
    q = (w * 255.0).round().clamp(0, 255).to(torch.uint8)  # (R, k)
    order = j.argsort(dim=-1)  # sort kept keys by position: reading order
    j, q = j.gather(-1, order), q.gather(-1, order)
    keep = q > 0  # (R, k): drop weights that round to 0, and the causal zeros
    counts = keep.sum(-1)  # (R,)
    offsets = np.zeros(L * H * T + 1, dtype="<u4")
    np.cumsum(counts.numpy(), out=offsets[1:])
    key_dtype = "<u2" if T < 65536 else "<u4"
    keys = j[keep].numpy().astype(key_dtype)
    weights = q[keep].numpy().astype(np.uint8)
    return offsets, keys, weights


def page_data(result: AttentionResult, *, top_k: int | None = None, layer: int = 0, head: int | None = 0, title: str | None = None) -> dict:
    """Everything the page's script needs, as plain JSON-able values."""
    result.check_head(layer, head)
    L, H, T = result.n_layer, result.n_head, len(result)
    k = edges_per_row(L, H, T, top_k)
    offsets, keys, weights = sparse_rows(result.probs, k)

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(a.tobytes()).decode("ascii")

    stats = result.stats.as_dict()
    columns = list(stats)
    rows = [[lay, hd, *[round(float(stats[c][lay, hd]), 4) for c in columns], result.stats.labels[lay][hd]] for lay in range(L) for hd in range(H)]
    return {
        "version": 1,
        "title": title if title is not None else "Attention" + (f" — {result.model_name}" if result.model_name else ""),
        "model": result.model_name,
        "n_layer": L,
        "n_head": H,
        "T": T,
        "ids": result.ids,
        "tokens": result.tokens,
        "visible": [visible(t) for t in result.tokens],
        "top_k": k,
        "full_rows": k >= T,
        "key_bytes": keys.dtype.itemsize,
        "offsets": b64(offsets),
        "keys": b64(keys),
        "weights": b64(weights),
        "stats": {"columns": columns, "descriptions": {c: STAT_DESCRIPTIONS.get(c, "") for c in columns}, "rows": rows,
                  "induction_period": result.stats.induction_period},
        "layer": layer,
        "head": head if head is not None else "mean",
    }


@dataclass
class Fragment:
    """The attention view in pieces, for embedding: put ``css`` in a ``<style>``, ``html`` where the view
    goes, then ``data_script`` and ``js`` + ``mount_js`` in ``<script>`` elements (``fragment_html``
    does exactly that)."""

    element_id: str
    css: str
    js: str
    html: str
    data_json: str

    @property
    def data_script(self) -> str:
        return f'<script type="application/json" id="{self.element_id}-data">{self.data_json}</script>'

    @property
    def mount_js(self) -> str:
        i = self.element_id
        return f'GPT2LabAttention.mount(document.getElementById("{i}"), JSON.parse(document.getElementById("{i}-data").textContent));'

    @property
    def fragment_html(self) -> str:
        """One self-contained block: style, mount point, data, script."""
        return (f"<style>{self.css}</style>\n{self.html}\n{self.data_script}\n"
                f"<script>{self.js}\n{self.mount_js}</script>")


def fragment(result: AttentionResult, *, element_id: str = "gpt2lab-attention", top_k: int | None = None,
             layer: int = 0, head: int | None = 0, title: str | None = None) -> Fragment:
    """The interactive view of ``result`` as embeddable pieces (see ``Fragment``)."""
    check_element_id(element_id)
    data = page_data(result, top_k=top_k, layer=layer, head=head, title=title)
    html = f'<div class="g2l-attn" id="{element_id}"><noscript>This attention view needs JavaScript.</noscript></div>'
    return Fragment(element_id, asset("attention.css"), asset("attention.js"), html, script_json(data))


def render_page(result: AttentionResult, **kwargs) -> str:
    """The full self-contained page as a string (``kwargs`` as for ``fragment``)."""
    frag = fragment(result, **kwargs)
    return fill_page(frag.css, frag.html, frag.data_script, frag.js + "\n" + frag.mount_js)


def write_page(result: AttentionResult, path: str | Path, **kwargs) -> Path:
    """Write the page to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, render_page(result, **kwargs).encode("utf-8"))
