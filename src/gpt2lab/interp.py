"""Interpretability on the hook points: logit lens, activation and attribution patching, head ablation,
logit attribution, activation steering.

    >>> from gpt2lab import GPT2, Tokenizer
    >>> from gpt2lab import interp
    >>> model, tok = GPT2.from_pretrained("gpt2"), Tokenizer.gpt2()
    >>> clean = torch.tensor([tok.encode("When Mary and John went to the store, John gave a drink to")])
    >>> corrupt = torch.tensor([tok.encode("When Mary and John went to the store, Mary gave a drink to")])
    >>> mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]
    >>> diff = interp.logit_diff(mary, john)                          # metric: logit(Mary) - logit(John), last position
    >>> interp.patch(model, clean, corrupt, diff).shape               # (L, T): restore one layer x position at a time
    >>> interp.patch(model, clean, corrupt, diff, point="attn.z", by="head").shape   # (L, H)
    >>> interp.attribution_patch(model, clean, corrupt, diff).shape   # (L, T) again, estimated from one backward
    >>> interp.logit_attribution(model, clean, mary, john)["h.9.attn.h9"]            # one head's direct effect
    >>> interp.logit_lens(model, clean).shape                         # (L + 1, B, T, V)
    >>> print(interp.check_answer(model, tok, "The Eiffel Tower is in", " Paris"))  # rank, probability, top 10
    >>> love = interp.steering(model, tok, "Love", "Hate", layer=6, coeff=5)   # ActAdd: steer what it writes
    >>> with love.applied(model):
    ...     model.generate(torch.tensor([love.prompt_ids(tok, "I hate you because")]), 30)

Every function runs the model through ``model.run_with_cache`` and ``model.hooks`` (``gpt2lab.hooks``),
under ``torch.no_grad`` (``attribution_patch``: with gradients for the activations, none for the weights)
and in eval mode (the model's mode is restored). Numerics are the model's own:
no LayerNorm folding, no weight centring, so results are those of the released weights.

The result objects (``lens``, ``check_answer``, ``patching``, ``attribution``, ``steer_text``) add what a person wants to look at: token
names, top predictions, baselines; they draw themselves as PNGs and pages (``gpt2lab.views.interp``) and
show in a notebook by themselves (``_repr_html_``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from . import kernels
from .errors import GPT2LabError, InputError
from .tokens import token_ids, token_texts

if TYPE_CHECKING:
    from .model import GPT2

Metric = Callable[[torch.Tensor], "torch.Tensor | float"]

# where each hook point keeps its positions and its heads: (position axis, head axis or None)
POINT_AXES: dict[str, tuple[int, int | None]] = {
    "resid_pre": (1, None), "ln_1.scale": (1, None), "attn.q": (2, 1), "attn.k": (2, 1), "attn.v": (2, 1),
    "attn.scores": (2, 1), "attn.probs": (2, 1), "attn.z": (2, 1), "attn.out": (1, None), "resid_mid": (1, None),
    "ln_2.scale": (1, None), "mlp.pre": (1, None), "mlp.post": (1, None), "mlp.out": (1, None), "resid_post": (1, None),
}
TOKENS_PER_BATCH = 8192  # patched runs are stacked along the batch up to about this many tokens per forward


@contextlib.contextmanager
def _inspecting(model: GPT2) -> Iterator[None]:
    """Eval mode (no dropout), no autograd, and on a CPU where it pays the packed products that
    ``generate`` uses (``gpt2lab.kernels``); the model's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), kernels.packed(model):
            yield
    finally:
        model.train(was_training)


def _as_batch(model: GPT2, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.size(1) == 0:
        raise InputError(f"token ids must be (T,) or (B, T) with T >= 1, got shape {tuple(idx.shape)}")
    if idx.size(1) > model.config.block_size:
        raise InputError(f"the input is {idx.size(1)} tokens; the model reads at most {model.config.block_size}")
    if int(idx.min()) < 0 or int(idx.max()) >= model.config.vocab_size:
        raise InputError(f"a token id is outside the model's vocabulary of {model.config.vocab_size}")
    return idx.to(model.device)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def logit_diff(answer: int, wrong: int | None = None, position: int = -1) -> Metric:
    """The metric patching usually reads: logit[answer] - logit[wrong] at ``position``, averaged over the batch."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        at = logits[:, position].float()  # (B, V)
        value = at[:, answer] - (at[:, wrong] if wrong is not None else 0.0)  # (B,)
        return value.mean()

    return metric


# ---------------------------------------------------------------------------------------------
# Logit lens
# ---------------------------------------------------------------------------------------------


def logit_lens(model: GPT2, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """What the model would predict if it stopped after each layer: (L + 1, B, T, V) logits.

    Entry l reads ``h.{l}.resid_pre`` (entry 0: the embeddings), the last entry ``h.{L-1}.resid_post``;
    each stream goes through ``ln_f`` with its statistics recomputed on that stream (not the final
    stream's scale), then the LM head. The last entry is the model's own output.
    """
    with _inspecting(model):
        return _unembed(model, _lens_streams(model, _as_batch(model, idx)))  # (L + 1, B, T, V)


def _lens_streams(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """The residual stream before each block and after the last: (L + 1, B, T, C), what the lens reads."""
    L = model.config.n_layer
    names = [f"h.{i}.resid_pre" for i in range(L)] + [f"h.{L - 1}.resid_post"]
    _, cache = model.run_with_cache(idx, names=names, last_logits_only=True)
    return torch.stack([cache[n] for n in names])


def _unembed(model: GPT2, streams: torch.Tensor) -> torch.Tensor:
    """Streams (..., C) read as the output reads the last one: ``ln_f`` on each stream's own statistics, then
    the LM head: (..., V)."""
    return model.lm_head(model.transformer.ln_f(streams))


# ---------------------------------------------------------------------------------------------
# Activation patching
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Head ablation
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Direct logit attribution
# ---------------------------------------------------------------------------------------------


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
        from .views.interp import plot_attribution

        return plot_attribution(self, path, n=n)

    def _repr_html_(self) -> str:
        from .views.interp import attribution_html

        return attribution_html(self)


# ---------------------------------------------------------------------------------------------
# Results for people: token names, top predictions, pictures
# ---------------------------------------------------------------------------------------------


@dataclass
class Lens:
    """The logit lens of one text: for each layer (rows, 0 = embeddings, L = the output) and position
    (columns), the top predicted next tokens and their probabilities."""

    tokens: list[str]
    top_ids: torch.Tensor  # (L + 1, T, k)
    top_probs: torch.Tensor  # (L + 1, T, k)
    top_tokens: list[list[list[str]]]  # [layer][position][rank]
    model_name: str = ""

    @property
    def n_layer(self) -> int:
        return self.top_ids.size(0) - 1

    def plot(self, path: str | Path) -> Path:
        from .views.interp import plot_lens

        return plot_lens(self, path)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        from .views.interp import save_lens

        return save_lens(self, out_dir)

    def _repr_html_(self) -> str:
        from .views.interp import lens_fragment

        return lens_fragment(self)


def lens(model: GPT2, tokenizer: Any, text_or_ids: str | Sequence[int] | torch.Tensor, top_k: int = 5, model_name: str = "") -> Lens:
    """``logit_lens`` of one text with token names: a ``Lens`` to read, plot or save as a page."""
    ids = token_ids(tokenizer, text_or_ids, model)
    probs = logit_lens(model, ids)[:, 0].float().softmax(-1)  # (L + 1, T, V)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
    name = _namer(tokenizer)
    top_tokens = [[[name(i) for i in row] for row in layer] for layer in top.indices.tolist()]
    return Lens(tokens=[name(i) for i in ids], top_ids=top.indices.cpu(), top_probs=top.values.cpu(),
                top_tokens=top_tokens, model_name=model_name)


@dataclass(repr=False)
class AnswerCheck:
    """How a model does on a prompt whose answer is known: TransformerLens's ``test_prompt``, returned
    rather than printed, with the logit lens added. Each answer token is read where the model predicts
    it, with the answer's earlier tokens already in the input (teacher forcing): its rank (0 = the
    model's top prediction), logit and probability, the top predictions there, and its rank after
    every block (``layer_ranks``: where in the network the answer comes up)."""

    prompt_tokens: list[str]
    answer_tokens: list[str]
    answer_ids: list[int]
    ranks: list[int]  # per answer token, at the output
    logits: list[float]
    probs: list[float]
    top: list[list[tuple[str, float, float]]]  # per answer token: (token, logit, probability), most likely first
    layer_ranks: torch.Tensor  # (L + 1, A): after the embeddings (row 0), after each block; row L is the output
    model_name: str = ""

    def to_text(self) -> str:
        from .views.interp import answer_text

        return answer_text(self)

    def __repr__(self) -> str:  # a notebook shows the report
        return self.to_text().rstrip("\n")


def check_answer(model: GPT2, tokenizer: Any, prompt: str, answer: str, top_k: int = 10, *, prepend_eot: bool = True,
                 model_name: str = "") -> AnswerCheck:
    """Does the model continue ``prompt`` with ``answer``, and how surely: an ``AnswerCheck``.

    ``answer`` may be several tokens; a word after a space starts with the space (``" Mary"``).
    ``prepend_eot`` starts the prompt with ``<|endoftext|>``, as TransformerLens's ``test_prompt`` starts
    GPT-2's with its BOS (the same token). One forward pass of prompt + answer gives every figure.
    """
    if not answer:
        raise InputError("the answer is empty: give the text the prompt should continue with (' Mary')")
    head: list[int] = []
    if prepend_eot:
        try:
            head = [int(tokenizer.eot_token)]
        except GPT2LabError:
            raise InputError("this vocabulary has no <|endoftext|> to begin the prompt with: pass prepend_eot=False "
                             "(gpt2lab answer --no-eot)") from None
    prompt_ids = head + token_ids(tokenizer, prompt, min_tokens=0 if prepend_eot else 1)
    answer_ids = [int(i) for i in tokenizer.encode(answer)]
    idx = _as_batch(model, prompt_ids + answer_ids)  # (1, P + A), checked against the context and vocabulary
    L, P, A = model.config.n_layer, len(prompt_ids), len(answer_ids)
    with _inspecting(model):
        # the logit lens at the A positions that predict the answer tokens; the last row is the model's output
        streams = _lens_streams(model, idx)[:, 0, P - 1 : P + A - 1]  # (L + 1, A, C)
        lensed = _unembed(model, streams).float()  # (L + 1, A, V)
    target = torch.tensor(answer_ids, device=lensed.device)  # (A,)
    answer_logits = lensed.gather(-1, target.expand(L + 1, A)[..., None])  # (L + 1, A, 1)
    layer_ranks = (lensed > answer_logits).sum(-1).cpu()  # (L + 1, A): tokens scored above the answer
    out = lensed[-1]  # (A, V)
    probs = out.softmax(-1)  # (A, V)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
    name = _namer(tokenizer)
    return AnswerCheck(
        prompt_tokens=[name(i) for i in prompt_ids], answer_tokens=[name(i) for i in answer_ids], answer_ids=answer_ids,
        ranks=layer_ranks[-1].tolist(), logits=answer_logits[-1, :, 0].tolist(),
        probs=probs.gather(-1, target[:, None])[:, 0].tolist(),
        top=[[(name(i), float(out[a, i]), float(p)) for i, p in zip(ids, ps)]
             for a, (ids, ps) in enumerate(zip(top.indices.tolist(), top.values.tolist()))],
        layer_ranks=layer_ranks, model_name=model_name)


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
        from .views.interp import plot_patching

        return plot_patching(self, path)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        from .views.interp import save_patching

        return save_patching(self, out_dir)

    def _repr_html_(self) -> str:
        from .views.interp import patching_fragment

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


# ---------------------------------------------------------------------------------------------
# Activation steering
# ---------------------------------------------------------------------------------------------


@dataclass
class Steering:
    """Activation addition (ActAdd; Turner et al., 2023, "Steering Language Models With Activation
    Engineering"): ``coeff * (plus - minus)``, the difference of two prompts' residual streams at
    ``h.{layer}.resid_pre`` position by position, added to the first positions of another prompt's
    stream at the same point. Writing "Love" - "Hate" into "I hate you because" turns the text kind.

    ``vector`` is (n, C), the two prompts' streams subtracted row by row (the shorter prompt padded
    on the right with spaces, as ActAdd pads). Prompts begin with ``<|endoftext|>`` (``eot``), as
    ActAdd's do, so that no prompt's first word sits at position 0, where GPT-2 parks attention and
    the stream is unlike any other position's; that row of ``vector`` is then 0.
    """

    vector: torch.Tensor  # (n, C)
    layer: int
    coeff: float
    plus: str
    minus: str
    eot: int | None  # the token every prompt begins with (None: none)

    @property
    def point(self) -> str:
        return f"h.{self.layer}.resid_pre"

    def prompt_ids(self, tokenizer: Any, text: str) -> list[int]:
        """``text``'s ids as a steered prompt starts: after ``eot``, like the steering prompts."""
        return ([self.eot] if self.eot is not None else []) + token_ids(tokenizer, text)

    @contextlib.contextmanager
    def applied(self, model: GPT2) -> Iterator[GPT2]:
        """``model`` with the steering on: the first forward pass (a prompt, or ``generate``'s prefill)
        gets ``coeff * vector`` added to its first n positions at ``point``; later passes (one token at
        a time, reading the cache the steered prompt left) run as they are, which is what adding to
        the front of every full recomputation gives. The prompt needs at least n tokens; a batch is
        steered row by row at the same positions, so its prompts should be of one length (left padding
        would put the first positions of a shorter prompt on its padding).

        A generation that outgrows the context slides its window off the front positions, and the
        steering with them.
        """
        n = self.vector.size(0)
        state = {"first": True}

        def add(x: torch.Tensor, name: str) -> torch.Tensor | None:  # x (B, T, C)
            if not state["first"]:
                return None
            state["first"] = False
            if x.size(1) < n:
                raise InputError(f"the prompt is {x.size(1)} tokens and the steering prompts {n}: steer a prompt of at least {n} tokens")
            x = x.clone()
            x[:, :n] += self.coeff * self.vector.to(x.device, x.dtype)  # (B, n, C) += (n, C)
            return x

        with model.hooks({self.point: add}):
            yield model


def steering(model: GPT2, tokenizer: Any, plus: str, minus: str = "", layer: int = 6, coeff: float = 5.0, *,
             prepend_eot: bool = True) -> Steering:
    """The ``Steering`` of ``plus`` - ``minus`` at ``h.{layer}.resid_pre``, times ``coeff`` (see ``Steering``).

    An empty ``minus`` subtracts the stream of spaces: what ``plus`` adds to a neutral prompt.
    ActAdd's "Love" - "Hate" on GPT-2 XL used layer 6 and coeff 5.
    """
    L = model.config.n_layer
    if not 0 <= layer < L:
        raise InputError(f"layer {layer} does not exist: this model has layers 0..{L - 1}")
    if not plus and not minus:
        raise InputError("give a text to steer towards (plus), away from (minus), or both")
    eot = int(tokenizer.eot_token) if prepend_eot else None
    head = [eot] if eot is not None else []
    space = _single_token(tokenizer, " ", "padding")
    plus_ids, minus_ids = head + [int(i) for i in tokenizer.encode(plus)], head + [int(i) for i in tokenizer.encode(minus)]
    n = max(len(plus_ids), len(minus_ids))
    ids = [row + [space] * (n - len(row)) for row in (plus_ids, minus_ids)]  # right-padded with spaces, as ActAdd pads
    point = f"h.{layer}.resid_pre"
    with _inspecting(model):
        _, cache = model.run_with_cache(_as_batch(model, torch.tensor(ids)), names=[point], last_logits_only=True)
    stream = cache[point].float()  # (2, n, C)
    return Steering(vector=(stream[0] - stream[1]).cpu(), layer=layer, coeff=float(coeff), plus=plus, minus=minus, eot=eot)


@dataclass
class SteeredText:
    """A prompt continued with and without a ``Steering``, each sample from the same seed on both sides,
    and the next tokens after the prompt whose probability the steering raised most."""

    steering: Steering
    prompt: str
    plain: list[str]  # continuations, sample i of each side from seed + i
    steered: list[str]
    raised: list[tuple[str, float, float]]  # (token, probability unsteered, steered), most raised first

    def _repr_html_(self) -> str:
        from .views.interp import steering_html

        return steering_html(self)


def steer_text(model: GPT2, tokenizer: Any, steering: Steering, prompt: str, max_new_tokens: int = 40, *, samples: int = 1,
               seed: int = 0, top: int = 5, **settings: Any) -> SteeredText:
    """``prompt`` continued ``samples`` times without and with ``steering`` (``steering.prompt_ids``:
    after ``<|endoftext|>``), until ``<|endoftext|>`` or ``max_new_tokens``; ``settings`` are
    ``generate``'s (``temperature``, ``top_p``...). Sample i of both sides draws from ``seed + i``, so
    the two texts differ only by the steering."""
    from .generate import generate

    ids = torch.tensor([steering.prompt_ids(tokenizer, prompt)])  # (1, T)
    _as_batch(model, ids)  # checked: the context, the vocabulary
    eot = int(tokenizer.eot_token)
    with _inspecting(model):
        before = model(ids.to(model.device), last_logits_only=True)[0, -1].float().softmax(-1)  # (V,)
        with steering.applied(model):
            after = model(ids.to(model.device), last_logits_only=True)[0, -1].float().softmax(-1)  # (V,)
    raised = (after - before).topk(top).indices.tolist()
    name = _namer(tokenizer)

    def continuations(steered: bool) -> list[str]:
        texts = []
        for i in range(samples):
            with steering.applied(model) if steered else contextlib.nullcontext():
                out = generate(model, ids, max_new_tokens, eos_token_id=eot, seed=seed + i, **settings)  # (1, T + n)
            assert isinstance(out, torch.Tensor)  # (not a stream)
            texts.append(tokenizer.decode([t for t in out[0, ids.size(1):].tolist() if t != eot]))
        return texts

    return SteeredText(steering, prompt, continuations(False), continuations(True),
                       [(name(i), float(before[i]), float(after[i])) for i in raised])


def _namer(tokenizer: Any) -> Callable[[int], str]:
    return lambda i: token_texts(tokenizer, [i])[0]


def _single_token(tokenizer: Any, token: str | int, what: str) -> int:
    if isinstance(token, int):
        return token
    if tokenizer is None:
        raise InputError(f"the {what} {token!r} is text: pass a tokenizer, or the token id")
    ids = tokenizer.encode(token)
    if len(ids) != 1:
        raise InputError(f"the {what} {token!r} is {len(ids)} tokens; give one token (for a word after a space, start it with the space: ' Mary')")
    return int(ids[0])


__all__ = [
    "logit_lens", "patch", "patch_cells", "attribution_patch", "ablate", "logit_attribution", "logit_diff",
    "Lens", "lens", "AnswerCheck", "check_answer", "Patching", "patching", "Attribution", "attribution", "Steering", "steering", "SteeredText",
    "steer_text", "POINT_AXES",
]
