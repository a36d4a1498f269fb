"""Pictures, pages and terminal tables of the interpretability results in ``gpt2lab.interp``.

    >>> lens = interp.lens(model, tok, "When Mary and John went to the store, John gave a drink to")
    >>> save_lens(lens, "out")              # out/lens.png and out/lens.html
    >>> p = interp.patching(model, tok, clean, corrupt, " Mary", " John")
    >>> save_patching(p, "out")             # out/patching.png and out/patching.html
    >>> plot_attribution(interp.attribution(model, tok, clean, " Mary", " John"), "out/attribution.png")

The result objects call these themselves (``lens.save(dir)``, ``p.plot(path)``, ``attr.plot(path)``)
and show in a notebook through ``lens_fragment`` / ``patching_fragment`` / ``attribution_html``.

Maps are drawn the same way everywhere: layers go up (the first layer at the bottom, next to the
input tokens, the output at the top), positions or heads go across. The lens is coloured by the top
prediction's probability (white to blue, colour ~ sqrt(p) as on the attention page); patching with a
diverging map centred at 0 on the normalised score (0 = the corrupt run, 1 = the clean run: blue
restores the clean answer, red pushes the other way).

Pages follow the attention page's rules (``views/html.py``): one file, no network, data in a
``<script type="application/json">`` written by ``script_json``, every string put in with
``textContent`` by ``interp.js``. A notebook fragment also carries the PNG, shown where scripts do
not run (a notebook viewer that strips them) and replaced by the interactive view where they do.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..files import atomic_write_bytes
from ..tokens import visible
from .html import asset, check_element_id, fill_page, script_json
from .plots import DPI, MAX_TICK_LABELS, _cmap, _figure, _label, _norm, _save

if TYPE_CHECKING:
    from ..interp import AnswerCheck, Attribution, Lens, Patching, SteeredText

DIVERGING = "RdBu"  # high = blue = towards the clean run; the page's interp.js uses the same end colours
ANNOTATE_MAX_COLUMNS = 24  # write each cell's token / value into the PNG up to this many columns...
ANNOTATE_MAX_ROWS = 40  # ...and rows; beyond, the cells are too small to read and only colour remains
PAGE_TEXT_MAX_COLUMNS = 48  # the page writes text into its cells up to this many columns
_ids = itertools.count()


# ---------------------------------------------------------------------------------------------
# shared: layout of a heat map, cell text colour, position labels
# ---------------------------------------------------------------------------------------------


def map_size(n_rows: int, n_cols: int, annotate: bool, cell_width: float = 0.85, bottom: float = 1.3) -> tuple[int, int]:
    """Pixel size (width, height) of a lens or patching PNG with ``n_rows`` x ``n_cols`` cells.

    Annotated cells are ``cell_width`` x 0.42 inches; plain ones shrink so the picture stays within
    about 24 x 18 inches. Margins: 1.9 in left (row labels), 1.5 in right (colour bar), 1.3 in above
    (title and top labels) and ``bottom`` below (1.3 in for token labels)."""
    w = cell_width if annotate else max(0.04, min(0.45, 20.0 / max(n_cols, 1)))
    h = 0.42 if annotate else max(0.08, min(0.4, 14.0 / max(n_rows, 1)))
    return round((1.9 + 1.5 + n_cols * w) * DPI), round((1.3 + bottom + n_rows * h) * DPI)


def _map_axes(fig, width_px: int, height_px: int, bottom: float = 1.3):
    """The heat map's axes and the colour bar's, placed in inches from the figure's edges."""
    W, H = width_px / DPI, height_px / DPI
    ax = fig.add_axes((1.9 / W, bottom / H, 1 - 3.4 / W, 1 - (1.3 + bottom) / H))
    cax = fig.add_axes((1 - 1.25 / W, bottom / H, 0.18 / W, 1 - (1.3 + bottom) / H))
    return ax, cax


def _ink_for(rgba: tuple[float, ...]) -> str:
    """Black or white text, whichever reads on a cell of this colour."""
    r, g, b = rgba[:3]
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def _position_ticks(n: int) -> list[int]:
    step = max(1, math.ceil(n / MAX_TICK_LABELS))
    return list(range(0, n, step))


def _tick_fontsize(n_ticks: int, axis_inches: float) -> float:
    return max(5.0, min(10.0, 0.75 * axis_inches * 72 / max(n_ticks, 1)))


def _short(text: str, limit: int) -> str:
    s = visible(text)
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def _probability(p: float) -> str:
    """Two decimals, or for a small probability its order of magnitude ("3e-04"), never a bare "0.00"."""
    return f"{p:.2f}" if p >= 0.005 else f"{p:.0e}"


def _named(model_name: str, what: str) -> str:
    return f"{model_name}: {what}" if model_name else what


# ---------------------------------------------------------------------------------------------
# logit lens
# ---------------------------------------------------------------------------------------------


def _lens_row_labels(n_layer: int) -> list[str]:
    return ["embed", *(str(i) for i in range(1, n_layer)), f"{n_layer} (out)"]


def lens_size(lens: Lens) -> tuple[int, int]:
    """Pixel size of ``plot_lens``'s picture."""
    rows, cols = lens.n_layer + 1, len(lens.tokens)
    return map_size(rows, cols, cols <= ANNOTATE_MAX_COLUMNS and rows <= ANNOTATE_MAX_ROWS)


def plot_lens(lens: Lens, path: str | Path) -> Path:
    """The logit lens as a heat map: rows are the streams after 0 (the embeddings) .. L (the output)
    blocks, columns the input positions, colour the top prediction's probability. Small maps carry
    each cell's top token and its probability; the top axis names the token that really comes next."""
    import matplotlib
    import numpy as np

    rows, T = lens.n_layer + 1, len(lens.tokens)
    annotate = T <= ANNOTATE_MAX_COLUMNS and rows <= ANNOTATE_MAX_ROWS
    w, h = lens_size(lens)
    top1 = lens.top_probs[..., 0].float().numpy()  # (L + 1, T)
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _figure(w / DPI, h / DPI)
        ax, cax = _map_axes(fig, w, h)
        cmap, norm = _cmap(), _norm()
        im = ax.imshow(top1, cmap=cmap, norm=norm, origin="lower", aspect="auto", interpolation="nearest")
        ticks = _position_ticks(T)
        axis_w = w / DPI - 3.4
        fs = _tick_fontsize(len(ticks), axis_w)
        ax.set_xticks(ticks, [_label(lens.tokens[i]) + (f" {i}" if len(ticks) < T else "") for i in ticks], rotation=90, fontsize=fs)
        ax.set_xlabel("input token")
        ax.set_yticks(range(rows), _lens_row_labels(lens.n_layer), fontsize=_tick_fontsize(rows, h / DPI - 2.6))
        ax.set_ylabel("blocks applied")
        nxt = ax.secondary_xaxis("top")
        nxt.set_xticks(ticks, [_label(lens.tokens[i + 1]) if i + 1 < T else "?" for i in ticks], rotation=90, fontsize=fs, color="#555")
        nxt.set_xlabel("next token in the text", color="#555")
        if annotate:
            cell_fs = max(5.0, min(8.0, 72 * axis_w / T / 7.5))
            for layer, pos in np.ndindex(rows, T):
                ink = _ink_for(cmap(norm(top1[layer, pos])))
                ax.text(pos, layer, f"{_short(lens.top_tokens[layer][pos][0], 9)}\n{_probability(float(top1[layer, pos]))}",
                        ha="center", va="center", fontsize=cell_fs, color=ink, linespacing=1.1)
        fig.colorbar(im, cax=cax, label="probability of the top token")
        fig.suptitle(_named(lens.model_name, f"logit lens: the top next-token prediction after each block ({T} tokens)"), fontsize=12)
        return _save(fig, path)


def lens_data(lens: Lens) -> dict[str, Any]:
    """What the lens page's script needs: tokens, and each cell's top-k as indices into ``words``
    (every distinct predicted token once) with probabilities."""
    words: dict[str, int] = {}
    flat = [words.setdefault(t, len(words)) for layer in lens.top_tokens for row in layer for t in row]
    return {
        "kind": "lens",
        "title": _named(lens.model_name, "Logit lens"),
        "model": lens.model_name,
        "rows": lens.n_layer + 1,
        "T": len(lens.tokens),
        "k": lens.top_ids.size(-1),
        "row_labels": _lens_row_labels(lens.n_layer),
        "tokens": lens.tokens,
        "visible": [visible(t) for t in lens.tokens],
        "words": [visible(t) for t in words],
        "top": flat,  # (L + 1) * T * k, row-major
        "probs": [float(f"{p:.4g}") for p in lens.top_probs.flatten().tolist()],  # 4 significant digits: 3e-07 stays 3e-07
        "cell_text": len(lens.tokens) <= PAGE_TEXT_MAX_COLUMNS,
    }


def lens_fragment(lens: Lens, *, element_id: str | None = None) -> str:
    """The interactive lens for a notebook (``Lens._repr_html_``): style, view, data and script in
    one block, with the PNG inside the view until the script replaces it."""
    return _fragment(lens_data(lens), element_id or _new_id("lens"), _png_data_url(plot_lens, lens), "logit lens")


def save_lens(lens: Lens, out_dir: str | Path) -> dict[str, Path]:
    """Write ``lens.png`` and ``lens.html`` (the interactive page) into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"png": plot_lens(lens, out / "lens.png"), "html": _write_page(lens_data(lens), out / "lens.html", "gpt2lab-lens")}


def lens_text(lens: Lens, positions: int = 6, width: int = 14) -> str:
    """A terminal table of the lens: a row per block count, the last ``positions`` positions across,
    each cell the top token and its probability."""
    T = len(lens.tokens)
    cols = list(range(max(0, T - positions), T))
    label_w = max(len(s) for s in _lens_row_labels(lens.n_layer))

    def cell(text: str) -> str:
        return text[:width].ljust(width)

    lines = [" " * label_w + "  " + "".join(cell(f"{i} {_short(lens.tokens[i], width - 2 - len(str(i)))}") for i in cols),
             " " * label_w + "  " + "".join(cell("-" * (width - 2)) for _ in cols)]
    labels = _lens_row_labels(lens.n_layer)
    for layer in reversed(range(lens.n_layer + 1)):  # the output first, as on the pictures: depth goes up
        row = "".join(cell(f"{_short(lens.top_tokens[layer][i][0], width - 7)} {_probability(float(lens.top_probs[layer, i, 0]))}") for i in cols)
        lines.append(labels[layer].rjust(label_w) + "  " + row.rstrip())
    shown = "the last " + str(len(cols)) if len(cols) < T else "all " + str(T)
    lines.append(f"\n(rows: blocks applied, output on top; {shown} positions; each cell the top next-token prediction and its probability)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# answer check
# ---------------------------------------------------------------------------------------------


def _percent(p: float) -> str:
    return f"{100 * p:6.2f}%" if p >= 5e-5 else f"{100 * p:.1e}%"


def answer_text(check: AnswerCheck) -> str:
    """The terminal report of an ``AnswerCheck``: the tokens, then per answer token its rank, logit and
    probability, the top predictions there, and its rank after each block."""
    n_p, n_a = len(check.prompt_tokens), len(check.answer_tokens)
    lines = [f"model: {check.model_name}"] if check.model_name else []
    lines += [f"prompt ({n_p} token{'s' * (n_p != 1)}): " + "|".join(visible(t) for t in check.prompt_tokens),
              f"answer ({n_a} token{'s' * (n_a != 1)}): " + "|".join(visible(t) for t in check.answer_tokens)]
    L = check.layer_ranks.size(0) - 1
    labels = _lens_row_labels(L)
    width = max(12, *(len(_short(t, 24)) for row in check.top for t, _, _ in row))
    for a, token in enumerate(check.answer_tokens):
        lines += ["", f"{_short(token, 24)} (answer token {a + 1} of {n_a}): rank {check.ranks[a]:,}, logit {check.logits[a]:.2f}, "
                      f"probability {_percent(check.probs[a]).strip()}",
                  f"  {'rank':>4}  {'token':<{width}}  {'logit':>7}  probability"]
        for r, (t, logit, p) in enumerate(check.top[a]):
            mark = "  <- the answer" if r == check.ranks[a] else ""
            lines.append(f"  {r:>4}  {_short(t, 24):<{width}}  {logit:7.2f}  {_percent(p)}{mark}")
        ranks = check.layer_ranks[:, a].tolist()
        lines.append("  its rank after each block (logit lens): " + ", ".join(f"{labels[i]} {ranks[i]:,}" for i in range(L + 1)))
    first = [r == 0 for r in check.ranks]
    lines.append("")
    if all(first):
        lines.append("Every answer token is the model's top prediction: greedy decoding writes this answer.")
    else:
        lines.append(f"{sum(first)} of {n_a} answer tokens are the model's top prediction: greedy decoding writes something else.")
    prompt_end = check.prompt_tokens[-1] if check.prompt_tokens else ""
    if check.ranks[0] != 0 and not check.answer_tokens[0][:1].isspace() and not prompt_end[-1:].isspace():
        lines.append("(The answer starts without a space. A word after a space is one token with its space: ' Paris', not 'Paris'.)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# activation patching
# ---------------------------------------------------------------------------------------------


def _differs(p: Patching) -> list[bool]:
    return [a != b for a, b in zip(p.clean_tokens, p.corrupt_tokens)]


def patching_size(p: Patching) -> tuple[int, int]:
    """Pixel size of ``plot_patching``'s picture."""
    rows, cols = p.scores.shape
    return map_size(rows, cols, cols <= ANNOTATE_MAX_COLUMNS and rows <= ANNOTATE_MAX_ROWS, cell_width=0.6, bottom=_patching_bottom(p))


def _patching_bottom(p: Patching) -> float:
    return 1.3 if p.by == "position" else 0.8  # head numbers need less room than rotated tokens


def _symmetric_limit(values) -> float:
    return max(1.0, float(abs(values).max())) if values.numel() else 1.0


def plot_patching(p: Patching, path: str | Path) -> Path:
    """The patching map: rows are layers, columns positions (labelled with the clean tokens; red and
    starred where the corrupt text differs) or heads; colour the normalised score on a diverging map
    centred at 0 (0 = the corrupt run, 1 = the clean one). The title gives the metric and its value
    on the clean and the corrupt input."""
    import matplotlib
    import numpy as np

    rows, cols = p.scores.shape
    annotate = cols <= ANNOTATE_MAX_COLUMNS and rows <= ANNOTATE_MAX_ROWS
    w, h = patching_size(p)
    normalised = p.normalised.float()
    limit = _symmetric_limit(normalised)
    values = normalised.numpy()  # (L, T) or (L, H)
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _figure(w / DPI, h / DPI)
        ax, cax = _map_axes(fig, w, h, _patching_bottom(p))
        cmap = matplotlib.colormaps[DIVERGING]
        from matplotlib.colors import Normalize

        norm = Normalize(vmin=-limit, vmax=limit)
        im = ax.imshow(values, cmap=cmap, norm=norm, origin="lower", aspect="auto", interpolation="nearest")
        axis_w = w / DPI - 3.4
        if p.by == "position":
            ticks, differs = _position_ticks(cols), _differs(p)
            labels = [("*" if differs[i] else "") + _label(p.clean_tokens[i]) + (f" {i}" if len(ticks) < cols else "") for i in ticks]
            ax.set_xticks(ticks, labels, rotation=90, fontsize=_tick_fontsize(len(ticks), axis_w))
            for tick, i in zip(ax.get_xticklabels(), ticks):
                if differs[i]:
                    tick.set_color("#c00")
                    tick.set_fontweight("bold")
            changed = [f"{_short(a, 12)} \u2192 {_short(b, 12)}" for a, b, d in zip(p.clean_tokens, p.corrupt_tokens, differs) if d]
            note = f"  (*: corrupt differs: {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})" if changed else ""
            ax.set_xlabel("position (clean token)" + note)
        else:
            ax.set_xticks(range(cols), [f"h{j}" for j in range(cols)], fontsize=_tick_fontsize(cols, axis_w))
            ax.set_xlabel("head (restored at every position)")
        ax.set_yticks(range(rows), [str(i) for i in range(rows)], fontsize=_tick_fontsize(rows, h / DPI - 1.3 - _patching_bottom(p)))
        ax.set_ylabel(f"layer (h.<layer>.{p.point})")
        if annotate:
            cell_fs = max(5.0, min(8.0, 72 * axis_w / cols / 4.0))
            for layer, j in np.ndindex(rows, cols):
                text = f"{values[layer, j]:.2f}".replace("-0.00", "0.00")
                ax.text(j, layer, text, ha="center", va="center", fontsize=cell_fs, color=_ink_for(cmap(norm(values[layer, j]))))
        fig.colorbar(im, cax=cax, label="normalised: 0 = corrupt run, 1 = clean run")
        what = f"{p.what}: {p.point} restored from the clean run, by {p.by}"
        fig.suptitle(_named(p.model_name, what) + f"\nmetric {p.metric_name}: clean {p.clean_metric:.3f}, corrupt {p.corrupt_metric:.3f}",
                     fontsize=11)
        return _save(fig, path)


def patching_data(p: Patching) -> dict[str, Any]:
    """What the patching page's script needs: both texts, the map (raw and normalised) and the metric."""
    scores, normalised = p.scores.float(), p.normalised.float()
    return {
        "kind": "patching",
        "title": _named(p.model_name, f"{p.what[0].upper()}{p.what[1:]}: {p.point} by {p.by}"),
        "model": p.model_name,
        "point": p.point,
        "by": p.by,
        "estimated": p.method != "exact",
        "metric": p.metric_name,
        "clean_metric": p.clean_metric,
        "corrupt_metric": p.corrupt_metric,
        "clean": p.clean_tokens,
        "corrupt": p.corrupt_tokens,
        "clean_visible": [visible(t) for t in p.clean_tokens],
        "corrupt_visible": [visible(t) for t in p.corrupt_tokens],
        "differs": _differs(p),
        "rows": scores.size(0),
        "cols": scores.size(1),
        "scores": [[round(float(v), 5) for v in row] for row in scores.tolist()],
        "normalised": [[round(float(v), 5) for v in row] for row in normalised.tolist()],
        "limit": _symmetric_limit(normalised),
        "cell_text": scores.size(1) <= PAGE_TEXT_MAX_COLUMNS,
    }


def patching_fragment(p: Patching, *, element_id: str | None = None) -> str:
    """The interactive patching map for a notebook (``Patching._repr_html_``), the PNG inside it until
    the script runs."""
    return _fragment(patching_data(p), element_id or _new_id("patching"), _png_data_url(plot_patching, p), "activation patching")


def save_patching(p: Patching, out_dir: str | Path) -> dict[str, Path]:
    """Write ``patching.png`` and ``patching.html`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"png": plot_patching(p, out / "patching.png"), "html": _write_page(patching_data(p), out / "patching.html", "gpt2lab-patching")}


def patching_text(p: Patching, n: int = 10) -> str:
    """The metric on both inputs and the ``n`` entries that restore the most (by normalised score)."""
    normalised = p.normalised
    flat = sorted(((float(normalised[i, j]), i, j) for i in range(normalised.size(0)) for j in range(normalised.size(1))), reverse=True)
    lines = [f"metric {p.metric_name}: clean {p.clean_metric:.4f}, corrupt {p.corrupt_metric:.4f}",
             f"{'patching' if p.method == 'exact' else p.what} {p.point} by {p.by}: {normalised.size(0)} layers x {normalised.size(1)} {p.by}s; "
             "normalised 0 = corrupt run, 1 = clean run", ""]

    def where(j: int) -> str:
        if p.by == "head":
            return f"head {j}"
        text = f"position {j:>3} {_short(p.clean_tokens[j], 14)}"
        return text + (f" (corrupt {_short(p.corrupt_tokens[j], 14)})" if p.clean_tokens[j] != p.corrupt_tokens[j] else "")

    for value, layer, j in flat[:n]:
        lines.append(f"  layer {layer:>2}, {where(j):<44} normalised {value:7.3f}   metric {float(p.scores[layer, j]):8.4f}")
    if p.checked:
        lines += ["", f"the {len(p.checked)} largest estimates, run exactly (patch_cells):"]
        lines += [f"  layer {layer:>2}, {where(j):<44} estimate {float(p.scores[layer, j]):8.4f}   exact {exact:8.4f}"
                  for layer, j, exact in p.checked]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# direct logit attribution
# ---------------------------------------------------------------------------------------------


def _attribution_target(attr: Attribution) -> str:
    labels = attr.labels or {}
    answer = labels.get("answer") or f"#{attr.target}"
    if attr.other is None:
        return f"logit({answer!r})" if labels.get("answer") else f"logit({answer})"
    wrong = labels.get("wrong") or f"#{attr.other}"
    return f"logit({answer!r}) - logit({wrong!r})" if labels.get("answer") else f"logit({answer}) - logit({wrong})"


def _heads_fit(attr: Attribution) -> bool:
    return 0 < attr.n_layer <= 48 and 0 < attr.n_head <= 32


def attribution_size(attr: Attribution, n: int = 20) -> tuple[int, int]:
    """Pixel size of ``plot_attribution``: 7 inches of bars (plus 5 for the head map when it fits),
    0.3 inch per bar."""
    bars = min(n, len(attr))
    width = 9.5 + (5.0 if _heads_fit(attr) else 0.0)
    return round(width * DPI), round(max(5.0, 1.6 + 0.3 * bars) * DPI)


def plot_attribution(attr: Attribution, path: str | Path, n: int = 20) -> Path:
    """The ``n`` components with the largest direct effect as horizontal bars (largest on top, blue
    pushes towards the answer, red away), and beside them every head's value as an (L, H) map."""
    import matplotlib

    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    top = attr.top(n)
    w, h = attribution_size(attr, n)
    W, H = w / DPI, h / DPI
    cmap = matplotlib.colormaps[DIVERGING]
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _figure(W, H)
        ax = fig.add_axes((1.9 / W, 0.8 / H, 6.8 / W, 1 - 1.6 / H))
        names, values = [k for k, _ in top][::-1], [v for _, v in top][::-1]
        limit = max((abs(v) for v in values), default=1.0) or 1.0
        colours = [cmap(0.85 if v >= 0 else 0.15) for v in values]
        ax.barh(range(len(values)), values, color=colours, height=0.7)
        ax.set_yticks(range(len(values)), names, fontsize=9)
        ax.axvline(0.0, color="#444", linewidth=0.8)
        ax.set_xlim(-limit * 1.25, limit * 1.25)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:+.3f} ", ha="left" if v >= 0 else "right", va="center", fontsize=8)
        ax.set_xlabel("direct contribution to the logit (difference)")
        ax.grid(axis="x", alpha=0.3)
        shown = sum(v for _, v in top)
        ax.set_title(f"top {len(top)} of {len(attr)} components (they sum to {shown:+.3f})", fontsize=10)
        if _heads_fit(attr):
            heads = attr.heads().float().numpy()  # (L, H)
            hlim = float(abs(heads).max()) or 1.0
            hax = fig.add_axes((10.0 / W, 0.8 / H, 3.6 / W, 1 - 1.6 / H))
            im = hax.imshow(heads, cmap=cmap, vmin=-hlim, vmax=hlim, origin="lower", aspect="auto", interpolation="nearest")
            hax.set_xlabel("head")
            hax.set_ylabel("layer")
            hax.set_xticks(range(attr.n_head), [str(j) for j in range(attr.n_head)], fontsize=_tick_fontsize(attr.n_head, 3.6))
            hax.set_yticks(range(attr.n_layer), [str(i) for i in range(attr.n_layer)], fontsize=_tick_fontsize(attr.n_layer, H - 1.6))
            hax.set_title("each head", fontsize=10)
            cax = fig.add_axes((13.75 / W, 0.8 / H, 0.15 / W, 1 - 1.6 / H))
            fig.colorbar(im, cax=cax)
        where = "the last position" if attr.position == -1 else f"position {attr.position}"
        fig.suptitle(f"direct logit attribution of {_attribution_target(attr)} at {where}: total {attr.total:+.3f}", fontsize=12)
        return _save(fig, path)


def attribution_text(attr: Attribution, n: int = 20) -> str:
    """The target, the total, and the ``n`` largest components, one a line with a bar."""
    top = attr.top(n)
    limit = max((abs(v) for _, v in top), default=1.0) or 1.0
    where = "the last position" if attr.position == -1 else f"position {attr.position}"
    lines = [f"direct logit attribution of {_attribution_target(attr)} at {where}",
             f"total {attr.total:+.4f} = the sum of all {len(attr)} components ({sum(attr.values()):+.4f})", ""]
    for name, value in top:
        bar = "#" * max(1, round(20 * abs(value) / limit)) if value else ""
        lines.append(f"  {name:<16} {value:+9.4f}  {'+' if value >= 0 else '-'}{bar}")
    return "\n".join(lines) + "\n"


def attribution_html(attr: Attribution, n: int = 20) -> str:
    """``Attribution._repr_html_``: the bar chart as an embedded PNG and the top components as a table
    (every label escaped; no script needed)."""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>{value:+.4f}</td></tr>" for name, value in attr.top(10))
    return (f"<div class='g2l-attribution'><img alt='{html.escape(_attribution_target(attr), quote=True)}' style='max-width:100%' "
            f"src='{_png_data_url(lambda a, path: plot_attribution(a, path, n=n), attr)}'>"
            f"<details><summary>top components (total {attr.total:+.4f})</summary>"
            f"<table><tr><th>component</th><th>value</th></tr>{rows}</table></details></div>")


# ---------------------------------------------------------------------------------------------
# pages and fragments: the shell of the attention page, interp.css and interp.js
# ---------------------------------------------------------------------------------------------


def _new_id(kind: str) -> str:
    # unique within a notebook kernel; the process-unique counter plus a random tail keeps two
    # kernels' outputs on one saved page apart too
    import secrets

    return f"g2l-{kind}-{next(_ids)}-{secrets.token_hex(3)}"


def _png_data_url(plot, result) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        png = plot(result, Path(tmp) / "view.png").read_bytes()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _mount_parts(data: dict[str, Any], element_id: str, inner: str = "") -> tuple[str, str, str]:
    """(the view's element, the data element, the script that mounts one into the other)."""
    check_element_id(element_id)
    body = f'<div class="g2l-interp" id="{element_id}">{inner or "<noscript>This view needs JavaScript.</noscript>"}</div>'
    data_el = f'<script type="application/json" id="{element_id}-data">{script_json(data)}</script>'
    mount = f'GPT2LabInterp.mount(document.getElementById("{element_id}"), JSON.parse(document.getElementById("{element_id}-data").textContent));'
    return body, data_el, mount


def _fragment(data: dict[str, Any], element_id: str, png_url: str, what: str) -> str:
    img = f'<img alt="{what}" src="{png_url}" style="max-width:100%">'
    body, data_el, mount = _mount_parts(data, element_id, img)
    return f"<style>{asset('interp.css')}</style>\n{body}\n{data_el}\n<script>{asset('interp.js')}\n{mount}</script>"


def _write_page(data: dict[str, Any], path: Path, element_id: str) -> Path:
    body, data_el, mount = _mount_parts(data, element_id)
    page = fill_page(asset("interp.css"), body, data_el, asset("interp.js") + "\n" + mount)  # the attention page's shell
    return atomic_write_bytes(path, page.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# activation steering
# ---------------------------------------------------------------------------------------------


def steering_text(result: SteeredText) -> str:
    """The steering, the next tokens it raised most, then each sample unsteered and steered, one under the other."""
    st = result.steering
    n = st.vector.size(0)
    lines = [f"steering: {st.coeff:+g} x ({st.plus!r} - {st.minus!r}) at {st.point}, added to the prompt's first {n} positions"
             + (" (<|endoftext|> first)" if st.eot is not None else ""),
             "next token after the prompt, most raised by the steering:"]
    lines += [f"  {_short(token, 16):<16} {before:8.2%} -> {after:7.2%}" for token, before, after in result.raised]
    indent = "\n" + " " * len("unsteered: ")  # a continuation's later lines stay under its first
    for i, (plain, steered) in enumerate(zip(result.plain, result.steered, strict=True)):
        lines += ["", *([f"sample {i + 1}:"] if len(result.plain) > 1 else []),
                  "unsteered: " + (result.prompt + plain).replace("\n", indent),
                  "steered:   " + (result.prompt + steered).replace("\n", indent)]
    return "\n".join(lines) + "\n"


def steering_html(result: SteeredText) -> str:
    """``SteeredText._repr_html_``: the raised tokens, then each sample's two continuations side by side
    (every text escaped; no script needed)."""
    st = result.steering
    cell = "<td style='white-space:pre-wrap;vertical-align:top;text-align:left'>"
    raised = "".join(f"<tr><td>{html.escape(visible(token))}</td><td>{before:.2%}</td><td>{after:.2%}</td></tr>"
                     for token, before, after in result.raised)
    samples = "".join(f"<tr>{cell}<b>{html.escape(result.prompt)}</b>{html.escape(plain)}</td>"
                      f"{cell}<b>{html.escape(result.prompt)}</b>{html.escape(steered)}</td></tr>"
                      for plain, steered in zip(result.plain, result.steered, strict=True))
    return (f"<div class='g2l-steering'><p>{html.escape(f'{st.coeff:+g} x ({st.plus!r} - {st.minus!r}) at {st.point}')}</p>"
            f"<table><tr><th>next token</th><th>unsteered</th><th>steered</th></tr>{raised}</table>"
            f"<table><tr><th>unsteered</th><th>steered</th></tr>{samples}</table></div>")


__all__ = [
    "steering_text", "steering_html",
    "plot_lens", "save_lens", "lens_fragment", "lens_text", "lens_data", "lens_size",
    "plot_patching", "save_patching", "patching_fragment", "patching_text", "patching_data", "patching_size",
    "plot_attribution", "attribution_html", "attribution_text", "attribution_size", "map_size",
]
