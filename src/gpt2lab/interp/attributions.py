"""Direct logit attribution: how much each head, each MLP and the embeddings write straight into
the answer's logit (the final stream is their sum, and ``ln_f`` is linear in it once its scale is
held at the run's value)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..tokens import token_ids
from .common import _as_batch, _inspecting, _namer, _single_token

if TYPE_CHECKING:
    from ..model import GPT2


def logit_attribution(
    model: GPT2,
    idx: torch.Tensor | Sequence[int],
    target: int,
    other: int | None = None,
    position: int = -1,
) -> Attribution:
    """Each component's direct contribution to logit[target] (minus logit[other]) at ``position``.

    The final stream is a sum: the embeddings, each head's output (its ``attn.z`` through its slice of
    ``c_proj``), each attention bias, each MLP's output. ``ln_f`` is linear in that sum once its scale
    is held at the run's value: each component, centred as LayerNorm centres the whole, divided by that
    scale, times ``ln_f``'s weight, dotted with the unembedding direction of target (minus other); plus
    ``ln_f.bias`` dotted with it. So the values add up to the real logit (difference).

    ``idx`` is one sequence, (T,) or (1, T). Keys: ``embed``, ``h.{i}.attn.h{j}``, ``h.{i}.attn.bias``,
    ``h.{i}.mlp``, ``ln_f.bias``.
    """
    idx = _as_batch(model, idx)
    if idx.size(0) != 1:
        raise InputError(f"logit attribution reads one sequence; got a batch of {idx.size(0)}")
    V = model.config.vocab_size
    for token in (target, other):
        if token is not None and not 0 <= token < V:
            raise InputError(f"token id {token} is outside the model's vocabulary of {V}")
    L, H, D, C = model.config.n_layer, model.config.n_head, model.config.head_dim, model.config.n_embd
    with _inspecting(model):
        logits, cache = model.run_with_cache(
            idx, names=["h.0.resid_pre", "ln_f.scale", *(f"h.{i}.{p}" for i in range(L) for p in ("attn.z", "mlp.out"))])
        unembed = model.lm_head.weight  # (V, C)
        direction = unembed[target] - (unembed[other] if other is not None else 0.0)  # (C,)
        ln_f = model.transformer.ln_f
        scale = cache["ln_f.scale"][0, position]  # (1,): the run's sqrt(var + eps) at this position
        parts: dict[str, torch.Tensor] = {"embed": cache["h.0.resid_pre"][0, position]}  # (C,)
        for i in range(L):
            c_proj = model.transformer.h[i].attn.c_proj
            z = cache[f"h.{i}.attn.z"][0, :, position]  # (H, D)
            w_o = c_proj.weight.view(C, H, D)  # (C, H, D): head j writes through columns j*D .. (j+1)*D
            per_head = torch.einsum("hd,chd->hc", z, w_o)  # (H, C)
            for j in range(H):
                parts[f"h.{i}.attn.h{j}"] = per_head[j]
            parts[f"h.{i}.attn.bias"] = c_proj.bias if c_proj.bias is not None else torch.zeros(C, device=z.device)
            parts[f"h.{i}.mlp"] = cache[f"h.{i}.mlp.out"][0, position]
        stack = torch.stack(list(parts.values()))  # (N, C)
        centred = stack - stack.mean(dim=-1, keepdim=True)  # LayerNorm subtracts the mean of the sum
        weighted = centred / scale * ln_f.weight  # (N, C)
        values = (weighted @ direction).tolist()  # (N,)
        bias = float(ln_f.bias @ direction) if ln_f.bias is not None else 0.0
        at = logits[0, position]
        total = float(at[target] - (at[other] if other is not None else 0.0))
    out = Attribution(zip(parts, values))
    out["ln_f.bias"] = bias
    out.total, out.target, out.other, out.position, out.n_layer, out.n_head = total, target, other, position, L, H
    out.labels = {}  # token names, filled in by attribution() when it has a tokenizer
    return out


class Attribution(dict):
    """Component name -> direct contribution (a float); ``total`` is the real logit (difference).

    ``sum(attr.values())`` equals ``total`` to float rounding. ``heads()`` arranges the head values as an
    (L, H) tensor; ``top(n)`` the components with the largest magnitude; ``plot(path)`` a bar chart.
    """

    total: float = 0.0
    target: int = 0
    other: int | None = None
    position: int = -1
    n_layer: int = 0
    n_head: int = 0
    labels: dict[str, str] = {}

    def heads(self) -> torch.Tensor:
        return torch.tensor([[self[f"h.{i}.attn.h{j}"] for j in range(self.n_head)] for i in range(self.n_layer)])

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        return sorted(self.items(), key=lambda kv: -abs(kv[1]))[:n]

    def plot(self, path: str | Path, n: int = 20) -> Path:
        from ..views.interp import plot_attribution

        return plot_attribution(self, path, n=n)

    def _repr_html_(self) -> str:
        from ..views.interp import attribution_html

        return attribution_html(self)


def attribution(model: GPT2, tokenizer: Any, text_or_ids: str | Sequence[int] | torch.Tensor, answer: str | int,
                wrong: str | int | None = None, position: int = -1) -> Attribution:
    """``logit_attribution`` from text, with the answer (and wrong) tokens given as text or ids."""
    ids = token_ids(tokenizer, text_or_ids, model)
    answer_id = _single_token(tokenizer, answer, "answer")
    wrong_id = _single_token(tokenizer, wrong, "wrong") if wrong is not None else None
    out = logit_attribution(model, ids, answer_id, wrong_id, position)
    name = _namer(tokenizer)
    out.labels = {"answer": name(answer_id), "wrong": name(wrong_id) if wrong_id is not None else "", "text": "".join(name(i) for i in ids)}
    return out


__all__ = ["logit_attribution", "Attribution", "attribution"]
