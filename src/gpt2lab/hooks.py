"""Hook points: read or replace any named activation of the forward pass.

The names are a contract, listed once in ``model.py`` (``HOOK_POINTS``). This module holds the
mechanism behind them, which ``GPT2`` exposes as three methods:

    >>> logits, cache = model.run_with_cache(idx, names=["h.5.attn.probs", "h.5.resid_post"])
    >>> cache["h.5.attn.probs"].shape                        # (B, H, T, T)
    >>> def zero_head_3(z, name):                             # fn(tensor, name) -> replacement or None
    ...     z = z.clone(); z[:, 3] = 0; return z
    >>> with model.hooks({"h.5.attn.z": zero_head_3}):
    ...     ablated = model(idx)                                # also inside run_with_cache and generate
    >>> model.hook_names()[:3]                                # ['h.0.resid_pre', 'h.0.ln_1.scale', 'h.0.attn.q']

Each hooked module asks ``self.hook(name, x)``; with nothing registered that is one test of an empty
dict, so an unhooked model runs at full speed. ``hooks`` registers functions for the duration of a
``with`` block and always removes them, after an exception too.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from . import kernels
from .errors import InputError

if TYPE_CHECKING:
    from .model import GPT2

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]
Names = Iterable[str] | Callable[[str], bool] | str | None


class HookPoints:
    """The functions registered at each hook point of one model, shared by all its modules.

    ``explicit`` chooses the model's computation once: False (default) hands attention, LayerNorm and
    GELU to PyTorch's fused kernels; True writes every formula out (see ``model.py``). A layer whose
    ``attn.scores`` / ``attn.probs`` or LayerNorm ``scale`` is hooked takes its explicit form for
    that call anyway, since the fused kernels never materialise those tensors.
    """

    __slots__ = ("fns", "explicit")

    def __init__(self) -> None:
        self.fns: dict[str, list[HookFn]] = {}
        self.explicit = False

    def run(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Hand ``x`` to each function at ``name`` in turn; a returned tensor replaces it."""
        for fn in self.fns.get(name, ()):
            out = fn(x, name)
            if out is None:
                continue
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"the hook at {name!r} returned {got}; return a tensor of shape {tuple(x.shape)} or None")
            x = out
        return x


class Hooked(nn.Module):
    """A module with hook points: ``self.hook("q", q)`` passes ``q`` through whatever the model has
    registered at ``prefix + "q"`` (e.g. ``"h.3.attn.q"``). ``GPT2`` sets ``points`` and ``prefix``
    on each of its modules; a module built on its own shares an empty registry and is never hooked."""

    points: HookPoints = HookPoints()
    prefix: str = ""

    def hook(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if not self.points.fns:  # the common case: nothing hooked anywhere
            return x
        return self.points.run(self.prefix + name, x)

    def hooked(self, name: str) -> bool:
        """Is anything registered at this point (for this call)?"""
        return bool(self.points.fns) and self.prefix + name in self.points.fns


def resolve_names(model: GPT2, names: Names) -> list[str]:
    """``None`` -> every point; a name, a list of names, or a predicate ``f(name) -> bool``; in forward order."""
    known = model.hook_names()
    if names is None:
        return known
    if callable(names):
        return [n for n in known if names(n)]
    wanted = [names] if isinstance(names, str) else list(names)
    known_set = set(known)
    for n in wanted:
        if n not in known_set:
            close = difflib.get_close_matches(n, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; model.hook_names() lists all {len(known)}"
            raise InputError(f"no hook point named {n!r}{hint}")
    wanted_set = set(wanted)
    return [n for n in known if n in wanted_set]


@contextlib.contextmanager
def hooks(model: GPT2, fns: Mapping[str, HookFn]) -> Iterator[GPT2]:
    """Register ``{name: fn}`` for the ``with`` block (see the module docstring); nests, and the
    registry is left exactly as found, also after an exception."""
    added = []
    resolve_names(model, list(fns))  # an unknown name fails here, before anything runs (one pass over the names)
    for name, fn in fns.items():
        if not callable(fn):
            raise InputError(f"the hook for {name!r} is {type(fn).__name__}, not a function fn(tensor, name)")
    try:
        for name, fn in fns.items():
            model.points.fns.setdefault(name, []).append(fn)
            added.append((name, fn))
        yield model
    finally:
        for name, fn in reversed(added):
            registered = model.points.fns[name]
            del registered[len(registered) - 1 - registered[::-1].index(fn)]  # the last one we added
            if not registered:
                del model.points.fns[name]


def run_with_cache(
    model: GPT2,
    idx: torch.Tensor,
    names: Names = None,
    *,
    device: torch.device | str | None = None,
    **forward_kwargs: Any,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """Run ``model(idx, **forward_kwargs)`` and keep the activations at ``names`` (default: all).

    Returns ``(logits, cache)`` (``((logits, loss), cache)`` when ``targets`` is passed), ``cache``
    mapping each name to its tensor (detached), in forward order, on ``device`` (default: the
    model's; there nothing is copied). Only the names asked for are kept. Hooks already registered
    run first: the cache sees what they left.
    Under ``torch.no_grad()`` on a CPU where it pays, the products use the packed weights that
    ``generate`` uses (``gpt2lab.kernels``): the same function to float rounding (~1e-6), 2x faster.
    """
    selected = resolve_names(model, names)
    cache: dict[str, torch.Tensor] = {}
    target = torch.device(device) if device is not None else None

    def keep(x: torch.Tensor, name: str) -> None:
        x = x.detach()
        cache[name] = x.to(target) if target is not None else x

    # with no gradient to keep, the same oneDNN-packed products generate uses, where they pay (CPU)
    fast_products = kernels.packed(model) if not torch.is_grad_enabled() else contextlib.nullcontext()
    with fast_products, hooks(model, {name: keep for name in selected}):
        out = model(idx, **forward_kwargs)
    return out, cache
