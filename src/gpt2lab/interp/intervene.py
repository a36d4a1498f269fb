"""Interventions on the hook points: activation patching (a piece of the clean run restored into
the corrupt one, entry by entry), attribution patching (the same map estimated from one backward
pass), and head ablation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..tokens import token_ids
from .common import Metric, _as_batch, _inspecting, _namer, _single_token, logit_diff

if TYPE_CHECKING:
    from ..model import GPT2

# where each hook point keeps its positions and its heads: (position axis, head axis or None)
POINT_AXES: dict[str, tuple[int, int | None]] = {
    "resid_pre": (1, None), "ln_1.scale": (1, None), "attn.q": (2, 1), "attn.k": (2, 1), "attn.v": (2, 1),
    "attn.scores": (2, 1), "attn.probs": (2, 1), "attn.z": (2, 1), "attn.out": (1, None), "resid_mid": (1, None),
    "ln_2.scale": (1, None), "mlp.pre": (1, None), "mlp.post": (1, None), "mlp.out": (1, None), "resid_post": (1, None),
}
TOKENS_PER_BATCH = 8192  # patched runs are stacked along the batch up to about this many tokens per forward


def _split_point(point: str) -> tuple[str, tuple[int, int | None]]:
    kind = point.split(".", 2)[2] if point.startswith("h.") else point
    if kind not in POINT_AXES:
        raise InputError(f"cannot patch at {point!r}: choose one of {', '.join(POINT_AXES)}")
    return kind, POINT_AXES[kind]


def _patch_inputs(model: GPT2, clean_idx: torch.Tensor | Sequence[int], corrupt_idx: torch.Tensor | Sequence[int], point: str,
                  by: str) -> tuple[str, int, torch.Tensor, torch.Tensor]:
    """(the point's kind, the axis a map entry is taken along, clean (B, T), corrupt (B, T)), checked."""
    kind, (pos_axis, head_axis) = _split_point(point)
    clean, corrupt = _as_batch(model, clean_idx), _as_batch(model, corrupt_idx)
    if clean.shape != corrupt.shape:
        raise InputError(f"clean and corrupt inputs must have the same shape, got {tuple(clean.shape)} and {tuple(corrupt.shape)}: "
                         "patching swaps positions one for one")
    if by not in ("position", "head"):
        raise InputError(f"by must be 'position' or 'head', got {by!r}")
    if by == "head" and head_axis is None:
        raise InputError(f"{kind!r} has no heads; patch by='head' on attn.q, attn.k, attn.v, attn.scores, attn.probs or attn.z")
    return kind, pos_axis if by == "position" or head_axis is None else head_axis, clean, corrupt


def patch(
    model: GPT2,
    clean_idx: torch.Tensor | Sequence[int],
    corrupt_idx: torch.Tensor | Sequence[int],
    metric: Metric,
    point: str = "resid_pre",
    by: str = "position",
    *,
    progress: bool | None = None,
) -> torch.Tensor:
    """Activation patching: run the corrupt input with one piece of one layer taken from the clean run.

    For every layer l, ``point`` (e.g. ``"resid_pre"``, ``"attn.z"``) of layer l is taken from the clean
    run, at one position (``by="position"``: the result is (L, T)) or for one head over every position
    (``by="head"``, on a per-head point: (L, H)); the rest of the corrupt run goes on from there, and the
    entry is ``metric(logits)``, a scalar. Entries near the clean run's metric mark where the
    information that tells the two inputs apart lives.

    Clean and corrupt must have the same shape (B, T). Runs are stacked along the batch, several
    patches per forward; ``progress`` shows a bar (default: when the sweep takes several forwards).
    """
    kind, axis, clean, corrupt = _patch_inputs(model, clean_idx, corrupt_idx, point, by)
    L = model.config.n_layer
    n_slots = clean.size(1) if by == "position" else model.config.n_head
    forwards = L * -(-n_slots // _runs_per_forward(clean))  # (ceiling division)
    with _inspecting(model):
        bar = tqdm(total=forwards, desc=f"patching {kind} by {by}", unit="run", leave=False,
                   disable=not progress if progress is not None else forwards < 8)
        values = _patched_metrics(model, clean, corrupt, metric, kind, axis, {layer: list(range(n_slots)) for layer in range(L)}, bar)
        bar.close()
    result = torch.empty(L, n_slots)
    for (layer, slot), value in values.items():
        result[layer, slot] = value
    return result


def patch_cells(
    model: GPT2,
    clean_idx: torch.Tensor | Sequence[int],
    corrupt_idx: torch.Tensor | Sequence[int],
    metric: Metric,
    cells: Sequence[tuple[int, int]],
    point: str = "resid_pre",
    by: str = "position",
) -> list[float]:
    """``patch``'s entries at ``cells`` only, (layer, position or head) each: what to run to check a few
    entries of an ``attribution_patch`` map exactly."""
    kind, axis, clean, corrupt = _patch_inputs(model, clean_idx, corrupt_idx, point, by)
    n_slots = clean.size(1) if by == "position" else model.config.n_head
    plan: dict[int, list[int]] = {}
    for layer, slot in cells:
        if not (0 <= layer < model.config.n_layer and 0 <= slot < n_slots):
            raise InputError(f"cell ({layer}, {slot}) is outside the {model.config.n_layer} x {n_slots} map")
        plan.setdefault(layer, []).append(slot)
    with _inspecting(model):
        values = _patched_metrics(model, clean, corrupt, metric, kind, axis, plan, None)
    return [values[(layer, slot)] for layer, slot in cells]


def _runs_per_forward(clean: torch.Tensor) -> int:
    """Patched runs stacked along the batch of one forward: about ``TOKENS_PER_BATCH`` tokens."""
    return max(1, TOKENS_PER_BATCH // clean.numel())


def _patched_metrics(model: GPT2, clean: torch.Tensor, corrupt: torch.Tensor, metric: Metric, kind: str, axis: int,
                     plan: dict[int, list[int]], bar: Any) -> dict[tuple[int, int], float]:
    """``metric`` of the corrupt run with the clean ``h.{layer}.{kind}`` restored at one slot (a position or
    a head, along ``axis``), for each slot of each layer in ``plan``; several runs stacked per forward."""
    B = clean.size(0)
    per_forward = _runs_per_forward(clean)
    _, clean_cache = model.run_with_cache(clean, names=[f"h.{layer}.{kind}" for layer in plan])
    values: dict[tuple[int, int], float] = {}
    for layer, all_slots in plan.items():
        source = clean_cache[f"h.{layer}.{kind}"]
        for start in range(0, len(all_slots), per_forward):
            slots = all_slots[start : start + per_forward]

            def restore(x: torch.Tensor, name: str, slots: list[int] = slots, source: torch.Tensor = source) -> torch.Tensor:
                x = x.clone().unflatten(0, (len(slots), B))  # (n, B, ...): one patched run per slot
                for j, s in enumerate(slots):
                    index: list[int | slice] = [slice(None)] * x.dim()
                    index[0], index[axis + 1] = j, s  # axis + 1: the batch axis is now two
                    x[tuple(index)] = source[tuple(index[1:])]
                return x.flatten(0, 1)

            with model.hooks({f"h.{layer}.{kind}": restore}):
                logits = model(corrupt.repeat(len(slots), 1))  # (n B, T, V)
            for j, s in enumerate(slots):
                values[(layer, s)] = float(metric(logits[j * B : (j + 1) * B]))
            if bar is not None:
                bar.update(1)
    return values


def attribution_patch(
    model: GPT2,
    clean_idx: torch.Tensor | Sequence[int],
    corrupt_idx: torch.Tensor | Sequence[int],
    metric: Metric,
    point: str = "resid_pre",
    by: str = "position",
) -> torch.Tensor:
    """Attribution patching (Nanda, 2023): ``patch``'s map estimated from one backward pass.

    Restoring a piece's clean value a_clean into the corrupt run changes the metric by about
    (a_clean - a_corrupt) . d metric / d a, the gradient taken on the corrupt run: a first-order
    Taylor step. One forward of each input and one backward give every entry of every layer, where
    ``patch`` runs a forward per entry. Exact where the metric is linear in the piece, otherwise an
    estimate: good for a small difference, for a first look at a large model, or for choosing which
    entries to ``patch`` exactly. Same shape and meaning as ``patch``'s result: the corrupt run's
    metric plus the estimated change. ``metric`` must return a tensor (the gradient flows through it).
    """
    kind, axis, clean, corrupt = _patch_inputs(model, clean_idx, corrupt_idx, point, by)
    names = [f"h.{i}.{kind}" for i in range(model.config.n_layer)]
    with _inspecting(model):
        _, clean_cache = model.run_with_cache(clean, names=names)
    kept: dict[str, torch.Tensor] = {}

    def start(x: torch.Tensor, name: str) -> torch.Tensor:  # the stream becomes the leaf the gradient flows back to
        return x.detach().requires_grad_()

    def keep(x: torch.Tensor, name: str) -> None:
        if x.requires_grad and not x.is_leaf:
            x.retain_grad()
        kept[name] = x

    was_training, trainable = model.training, [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)  # gradients for the activations only: none is made for the weights
    try:
        with torch.enable_grad(), model.hooks({"h.0.resid_pre": start}), model.hooks(dict.fromkeys(names, keep)):
            value = metric(model(corrupt))
            if not isinstance(value, torch.Tensor) or not value.requires_grad:
                raise InputError("attribution patching needs a metric that returns a tensor computed from the logits (the gradient "
                                 "flows back through it), such as interp.logit_diff")
            value.backward()
    finally:
        for parameter, flag in zip(model.parameters(), trainable, strict=True):
            parameter.requires_grad_(flag)
        model.train(was_training)
    result = torch.empty(len(names), corrupt.size(1) if by == "position" else model.config.n_head)  # (L, T) or (L, H)
    for layer, name in enumerate(names):
        act = kept[name]
        grad = act.grad if act.grad is not None else torch.zeros_like(act)  # (a piece the metric never reads: no gradient)
        change = (clean_cache[name] - act.detach()).double() * grad.double()  # the point's shape
        result[layer] = change.sum(dim=[d for d in range(change.dim()) if d != axis]).float().cpu()
    return float(value.detach()) + result


def ablate(model: GPT2, idx: torch.Tensor | Sequence[int], heads: Sequence[tuple[int, int]], how: str = "zero") -> torch.Tensor:
    """Logits (B, T, V) with the given (layer, head) pairs knocked out of ``attn.z`` (before ``c_proj``).

    ``how="zero"`` sets the head's output to 0; ``"mean"`` to its mean over this input's batch and
    positions (the head still adds its average, but no longer says anything about each token).
    """
    if how not in ("zero", "mean"):
        raise InputError(f"how must be 'zero' or 'mean', got {how!r}")
    idx = _as_batch(model, idx)
    L, H = model.config.n_layer, model.config.n_head
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < L and 0 <= head < H):
            raise InputError(f"head ({layer}, {head}) does not exist: this model has layers 0..{L - 1} and heads 0..{H - 1}")
        by_layer.setdefault(layer, []).append(head)

    def knock_out(z: torch.Tensor, name: str) -> torch.Tensor:  # z (B, H, T, D)
        z = z.clone()
        for head in by_layer[int(name.split(".")[1])]:
            z[:, head] = 0.0 if how == "zero" else z[:, head].mean(dim=(0, 1), keepdim=True)
        return z

    with _inspecting(model), model.hooks({f"h.{layer}.attn.z": knock_out for layer in by_layer}):
        return model(idx)


@dataclass
class Patching:
    """A patching map with what it needs to be read: the tokens, the metric on the clean and the corrupt
    inputs, and ``scores`` (L, T) or (L, H), the metric with each piece restored. ``normalised`` maps the
    corrupt run to 0 and the clean run to 1: 1 means that piece alone restores the clean behaviour."""

    clean_tokens: list[str]
    corrupt_tokens: list[str]
    point: str
    by: str
    scores: torch.Tensor
    clean_metric: float
    corrupt_metric: float
    metric_name: str = "logit difference"
    model_name: str = ""
    method: str = "exact"  # "gradient": the scores are attribution patching's first-order estimates
    checked: list[tuple[int, int, float]] = field(default_factory=list)  # (layer, slot, exact score) of estimates run exactly

    @property
    def what(self) -> str:
        """How the map was made, in words: "activation patching" or "attribution patching (gradient estimate)"."""
        return "activation patching" if self.method == "exact" else "attribution patching (gradient estimate)"

    @property
    def normalised(self) -> torch.Tensor:
        span = self.clean_metric - self.corrupt_metric
        return (self.scores - self.corrupt_metric) / (span if abs(span) > 1e-12 else 1.0)

    def plot(self, path: str | Path) -> Path:
        from ..views.interp import plot_patching

        return plot_patching(self, path)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        from ..views.interp import save_patching

        return save_patching(self, out_dir)

    def _repr_html_(self) -> str:
        from ..views.interp import patching_fragment

        return patching_fragment(self)


def patching(
    model: GPT2,
    tokenizer: Any,
    clean: str | Sequence[int] | torch.Tensor,
    corrupt: str | Sequence[int] | torch.Tensor,
    answer: str | int,
    wrong: str | int,
    point: str = "resid_pre",
    by: str | None = None,
    *,
    method: str = "exact",
    check: int = 3,
    progress: bool | None = None,
    model_name: str = "",
) -> Patching:
    """``patch`` with the metric logit(answer) - logit(wrong) at the last position, from text.

    ``answer`` / ``wrong`` are single tokens (text such as ``" Mary"``, or ids). ``by`` defaults to
    ``"head"`` on the per-head points and ``"position"`` elsewhere. ``method="gradient"`` estimates the
    map by ``attribution_patch`` (one backward pass) instead of running ``patch``'s forward per entry,
    and then runs the ``check`` entries it estimates to move the metric most exactly (``checked``).
    """
    if method not in ("exact", "gradient"):
        raise InputError(f"method must be 'exact' (a run per entry) or 'gradient' (attribution patching), got {method!r}")
    clean_ids, corrupt_ids = token_ids(tokenizer, clean, model), token_ids(tokenizer, corrupt, model)
    if len(clean_ids) != len(corrupt_ids):
        raise InputError(f"the clean text is {len(clean_ids)} tokens and the corrupt one {len(corrupt_ids)}: "
                         "patching needs the same number of tokens; change words for words of one token each")
    answer_id, wrong_id = _single_token(tokenizer, answer, "answer"), _single_token(tokenizer, wrong, "wrong")
    kind, (_, head_axis) = _split_point(point)
    by = by or ("head" if head_axis is not None else "position")
    metric = logit_diff(answer_id, wrong_id)
    with _inspecting(model):
        clean_metric = float(metric(model(_as_batch(model, clean_ids), last_logits_only=True)))
        corrupt_metric = float(metric(model(_as_batch(model, corrupt_ids), last_logits_only=True)))
    checked: list[tuple[int, int, float]] = []
    if method == "exact":
        scores = patch(model, clean_ids, corrupt_ids, metric, point=kind, by=by, progress=progress)
    else:
        scores = attribution_patch(model, clean_ids, corrupt_ids, metric, point=kind, by=by)
        largest = (scores - corrupt_metric).abs().flatten().argsort(descending=True)[: max(check, 0)].tolist()
        cells = [divmod(int(i), scores.size(1)) for i in largest]  # (layer, slot), the largest estimated moves first
        exact = patch_cells(model, clean_ids, corrupt_ids, metric, cells, point=kind, by=by)
        checked = [(layer, slot, value) for (layer, slot), value in zip(cells, exact, strict=True)]
    name = _namer(tokenizer)
    return Patching(clean_tokens=[name(i) for i in clean_ids], corrupt_tokens=[name(i) for i in corrupt_ids], point=kind, by=by,
                    scores=scores, clean_metric=clean_metric, corrupt_metric=corrupt_metric,
                    metric_name=f"logit({name(answer_id)!r}) - logit({name(wrong_id)!r})", model_name=model_name, method=method,
                    checked=checked)


__all__ = ["POINT_AXES", "patch", "patch_cells", "attribution_patch", "ablate", "Patching", "patching"]
