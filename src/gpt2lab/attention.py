"""Looking inside: the attention of every layer and head, and what each head seems to do.

    >>> from gpt2lab import GPT2, attention
    >>> from gpt2lab.tokenizer import Tokenizer
    >>> model, tok = GPT2.from_pretrained("gpt2"), Tokenizer.gpt2()
    >>> att = attention(model, tok, "When Mary and John went to the store, John gave a drink to")
    >>> att.probs.shape                     # (L, H, T, T): layer, head, query, key
    >>> print(att.mapping(layer=5, head=1))  # which tokens each token looks at
    >>> att.stats.labels[5][1]              # e.g. "previous-token"

Row ``probs[l, h, i]`` is how query token ``i`` spreads its attention over the keys ``0..i`` in head
``h`` of layer ``l`` (each row sums to 1; the causal mask makes everything after ``i`` zero). The
probabilities are read at the model's ``h.{i}.attn.probs`` hook points, which make attention take its
explicit path for that call; the fused fast path never materialises them.

Per-head statistics (each an (L, H) tensor, averaged over query rows 1..T-1; row 0 can only look at
itself and would say nothing):

* ``entropy``: -sum p log p divided by log(number of visible keys) = log(i + 1): 1 for attention spread
  evenly over everything it may see, 0 for attention on a single token.
* ``distance``: the mean of i - j under the row's probabilities, in tokens: 0 looks at itself, large
  values look far back.
* ``sink``: the share of attention that goes to the first token. Many trained heads park attention
  there when they have nothing to do (an "attention sink").
* ``prev_token``: the share that goes to the token just before (j = i - 1). 1 for a pure
  previous-token head.
* ``self_token``: the share a token gives itself (j = i).
* ``induction``: on a separate input of random tokens repeated twice, the share that the second copy
  of token t gives to the token that *followed* t in the first copy. An induction head ("... A B ... A
  -> look at B") scores near 1; it is the mechanism behind in-context copying.

``labels[l][h]`` names what a head does when one pattern clearly dominates (thresholds in
``LABEL_RULES``), else ``"mixed"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .errors import InputError
from .tokens import token_ids, token_texts, visible

if TYPE_CHECKING:
    from .model import GPT2

# What a head is called when one statistic clearly dominates; first match wins, checked in this order.
# (statistic, threshold, label). Thresholds are shares of attention (0..1).
LABEL_RULES: tuple[tuple[str, float, str], ...] = (
    ("induction", 0.4, "induction"),
    ("prev_token", 0.5, "previous-token"),
    ("self_token", 0.5, "current-token"),
    ("sink", 0.6, "first-token sink"),
)
BROAD_ENTROPY = 0.85  # above this normalised entropy (and nothing else dominant) a head is "broad"

STAT_NAMES = ("entropy", "distance", "sink", "prev_token", "self_token", "induction")
STAT_DESCRIPTIONS = {
    "entropy": "spread of attention, 0 = one token, 1 = even over all visible tokens",
    "distance": "mean distance back to the attended tokens, in tokens",
    "sink": "share of attention on the first token",
    "prev_token": "share of attention on the token just before",
    "self_token": "share of attention on the token itself",
    "induction": "on repeated random tokens: share on the token after the earlier copy",
}


# ---------------------------------------------------------------------------------------------
# Statistics of attention patterns (pure functions of a (..., T, T) tensor, testable by hand)
# ---------------------------------------------------------------------------------------------


def _rows(probs: torch.Tensor) -> torch.Tensor:
    """The query rows the statistics average over: 1..T-1 (row 0 sees only itself)."""
    if probs.size(-1) < 2:
        raise InputError("attention statistics need at least 2 tokens")
    return probs[..., 1:, :]  # (..., T-1, T)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean normalised entropy of each pattern, (..., T, T) -> (...): row i divided by log(i + 1)."""
    T = probs.size(-1)
    p = _rows(probs)  # (..., T-1, T)
    h = -torch.special.xlogy(p, p).sum(-1)  # (..., T-1): entropy of rows 1..T-1 (0 log 0 = 0)
    visible_keys = torch.arange(2, T + 1, dtype=p.dtype, device=p.device)  # row i sees i + 1 keys
    return (h / visible_keys.log()).mean(-1).to(probs.dtype)


def distance(probs: torch.Tensor) -> torch.Tensor:
    """Mean attention distance in tokens: sum_j p_ij (i - j), averaged over rows 1..T-1."""
    T = probs.size(-1)
    pos = torch.arange(T, dtype=probs.dtype, device=probs.device)
    gap = (pos[:, None] - pos[None, :]).clamp_min(0)[1:]  # (T-1, T): i - j for rows 1..T-1
    return (_rows(probs) * gap).sum(-1).mean(-1)


def sink_share(probs: torch.Tensor) -> torch.Tensor:
    """Mean share of attention on the first token (rows 1..T-1)."""
    return _rows(probs)[..., 0].mean(-1)


def prev_token_score(probs: torch.Tensor) -> torch.Tensor:
    """Mean share of attention on the previous token: p[i, i-1] for i = 1..T-1."""
    return probs.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)


def self_token_score(probs: torch.Tensor) -> torch.Tensor:
    """Mean share of attention a token gives itself, rows 1..T-1."""
    return probs.diagonal(dim1=-2, dim2=-1)[..., 1:].mean(-1)


def induction_score(probs: torch.Tensor, period: int) -> torch.Tensor:
    """How much the second copy of a repeated sequence looks at "the token after my earlier copy".

    ``probs`` (..., T, T) is attention on ``x + x`` (a sequence of ``period`` tokens, then the same
    again; extra tokens before the first copy shift nothing as long as T - 2*period of them come first).
    Query t in the second copy holds the same token as t - period, which was followed by the token at
    t - period + 1: an induction head puts its attention there. Returns the mean of
    p[t, t - period + 1] over the second copy, (...).
    """
    T = probs.size(-1)
    if period < 1 or 2 * period > T:
        raise InputError(f"induction_score needs 2 * period <= T, got period={period}, T={T}")
    start = T - period  # first query of the second copy
    diag = probs.diagonal(offset=-(period - 1), dim1=-2, dim2=-1)  # (..., T - period + 1): p[t, t - period + 1]
    return diag[..., start - (period - 1) :].mean(-1)  # queries t = start .. T-1


def repeated_random_tokens(vocab_size: int, period: int, batch: int = 4, seed: int = 0, exclude: Sequence[int] = ()) -> torch.Tensor:
    """``batch`` rows of ``period`` random token ids, each row repeated twice: (batch, 2 * period)."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    for e in exclude:
        if 0 <= e < vocab_size:
            allowed[e] = False
    pool = allowed.nonzero().squeeze(1)  # (n_allowed,)
    first = pool[torch.randint(0, pool.numel(), (batch, period), generator=g)]  # (batch, period)
    return torch.cat([first, first], dim=1)  # (batch, 2 * period)


def head_labels(stats: dict[str, torch.Tensor]) -> list[list[str]]:
    """A short name for every head from its statistics: (L, H) tensors -> L lists of H strings."""
    L, H = stats["entropy"].shape
    labels = []
    for layer in range(L):
        row = []
        for head in range(H):
            name = "mixed"
            for stat, threshold, label in LABEL_RULES:
                if stat in stats and float(stats[stat][layer, head]) >= threshold:
                    name = label
                    break
            else:
                if float(stats["entropy"][layer, head]) >= BROAD_ENTROPY:
                    name = "broad"
            row.append(name)
        labels.append(row)
    return labels


@dataclass
class HeadStats:
    """Per-head statistics, each an (L, H) float tensor (see the module docstring), and labels."""

    entropy: torch.Tensor
    distance: torch.Tensor
    sink: torch.Tensor
    prev_token: torch.Tensor
    self_token: torch.Tensor
    induction: torch.Tensor | None
    labels: list[list[str]]
    induction_period: int | None = None

    @classmethod
    def from_probs(cls, probs: torch.Tensor, induction_probs: torch.Tensor | None = None, period: int | None = None) -> HeadStats:
        """Statistics of ``probs`` (L, H, T, T); induction from ``induction_probs`` (L, H, 2P, 2P) or (B, L, H, 2P, 2P)."""
        stats = {
            "entropy": entropy(probs),
            "distance": distance(probs),
            "sink": sink_share(probs),
            "prev_token": prev_token_score(probs),
            "self_token": self_token_score(probs),
        }
        ind = None
        if induction_probs is not None:
            ind = induction_score(induction_probs, period if period is not None else induction_probs.size(-1) // 2)
            if ind.dim() == 3:  # (B, L, H): average the batch of random sequences
                ind = ind.mean(0)
            stats["induction"] = ind
        labels = head_labels(stats)
        stats.pop("induction", None)
        return cls(**stats, induction=ind, labels=labels, induction_period=period)

    def as_dict(self) -> dict[str, torch.Tensor]:
        d = {name: getattr(self, name) for name in STAT_NAMES}
        return {k: v for k, v in d.items() if v is not None}

    def table(self) -> list[dict]:
        """One dict per head: layer, head, every statistic as a float, label."""
        d = self.as_dict()
        L, H = self.entropy.shape
        return [
            {"layer": layer, "head": head, **{k: float(v[layer, head]) for k, v in d.items()}, "label": self.labels[layer][head]}
            for layer in range(L)
            for head in range(H)
        ]

    def format_table(self) -> str:
        """The table as aligned text, one line per head."""
        names = list(self.as_dict())
        header = f"{'layer':>5} {'head':>4} " + " ".join(f"{n:>10}" for n in names) + "  label"
        lines = [header]
        for row in self.table():
            lines.append(f"{row['layer']:>5} {row['head']:>4} " + " ".join(f"{row[n]:>10.3f}" for n in names) + f"  {row['label']}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The result and the capture
# ---------------------------------------------------------------------------------------------


@dataclass
class AttentionResult:
    """The attention of one input through every layer and head.

    Attributes:
        ids: the token ids, length T.
        tokens: the exact text of each token (``visible(t)`` shows whitespace).
        probs: (L, H, T, T) float32 on the CPU: probs[l, h, i, j] is how much query i attends to key j.
        stats: per-head statistics and labels.
        model_name: where the model came from, for titles.
    """

    ids: list[int]
    tokens: list[str]
    probs: torch.Tensor
    stats: HeadStats
    model_name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_layer(self) -> int:
        return self.probs.size(0)

    @property
    def n_head(self) -> int:
        return self.probs.size(1)

    def __len__(self) -> int:
        return len(self.ids)

    def check_head(self, layer: int | None, head: int | None) -> None:
        """Raise an ``InputError`` naming the valid range when ``layer``/``head`` do not exist."""
        if layer is not None and not 0 <= layer < self.n_layer:
            raise InputError(f"layer {layer} does not exist: the model has layers 0..{self.n_layer - 1}")
        if head is not None and not 0 <= head < self.n_head:
            raise InputError(f"head {head} does not exist: each layer has heads 0..{self.n_head - 1}")

    def pattern(self, layer: int | None = None, head: int | None = None) -> torch.Tensor:
        """The (T, T) pattern of one head; the mean over heads of a layer when ``head`` is None;
        the mean over every layer and head when both are None."""
        self.check_head(layer, head)
        if layer is None and head is not None:
            return self.probs[:, head].mean(0)
        if layer is None:
            return self.probs.mean((0, 1))
        if head is None:
            return self.probs[layer].mean(0)
        return self.probs[layer, head]

    def top(self, token: int, k: int = 5, layer: int | None = None, head: int | None = None) -> list[tuple[int, float]]:
        """The ``k`` keys ``token`` attends to most, as (position, weight), heaviest first."""
        if not 0 <= token < len(self):
            raise InputError(f"token {token} does not exist: the text has tokens 0..{len(self) - 1}")
        row = self.pattern(layer, head)[token, : token + 1]  # only visible keys
        w, j = row.topk(min(k, token + 1))
        return [(int(a), float(b)) for a, b in zip(j, w)]

    def describe_source(self, layer: int | None, head: int | None) -> str:
        if layer is None and head is None:
            return f"mean over all {self.n_layer} layers x {self.n_head} heads"
        if head is None:
            return f"layer {layer}, mean over {self.n_head} heads"
        if layer is None:
            return f"head {head}, mean over {self.n_layer} layers"
        return f"layer {layer}, head {head} ({self.stats.labels[layer][head]})"

    def mapping(self, layer: int | None = None, head: int | None = None, token: int | None = None, k: int = 5) -> str:
        """Terminal text: for each token (or just ``token``), the tokens it attends to most, with weights.

            attention: layer 5, head 1 (previous-token)
              3 ␣went    -> 2 ␣John 0.91 | 3 ␣went 0.05 | 0 When 0.02
        """
        self.check_head(layer, head)
        if k < 1:
            raise InputError(f"--top-k must be at least 1, got {k}")
        rows = range(len(self)) if token is None else [token]
        shown = [visible(t) for t in self.tokens]
        width = min(16, max(len(s) for s in shown))
        digits = len(str(len(self) - 1))

        def cut(s: str, n: int) -> str:
            return s if len(s) <= n else s[: n - 1] + "\u2026"

        lines = [f"attention: {self.describe_source(layer, head)}"]
        for i in rows:
            targets = " | ".join(f"{j} {cut(shown[j], 16)} {w:.2f}" for j, w in self.top(i, k, layer, head))
            lines.append(f"  {i:>{digits}} {cut(shown[i], width):<{width}} -> {targets}")
        return "\n".join(lines)


@torch.no_grad()
def capture(model: GPT2, ids: torch.Tensor) -> torch.Tensor:
    """Run ``ids`` (B, T) and return every layer's attention probabilities (B, L, H, T, T), float32, CPU.

    Reads the ``h.{i}.attn.probs`` hook points (which make attention explicit for this call). Each
    layer's probabilities are copied into one preallocated tensor as they are made and not kept, so
    peak memory is one copy of (B, L, H, T, T) plus one layer's worth on the model's device.
    """
    B, T = ids.shape
    cfg = model.config
    out = torch.empty(B, cfg.n_layer, cfg.n_head, T, T, dtype=torch.float32)

    def write_into(layer: int):
        def copy(probs: torch.Tensor, name: str) -> None:
            out[:, layer].copy_(probs)  # (B, H, T, T)
        return copy

    with model.hooks({f"h.{i}.attn.probs": write_into(i) for i in range(cfg.n_layer)}):
        model(ids.to(model.device), last_logits_only=True)
    return out


def attention(
    model: GPT2,
    tokenizer=None,
    text_or_ids: str | Sequence[int] | torch.Tensor = "",
    *,
    induction: bool = True,
    induction_period: int | None = None,
    induction_batch: int = 4,
    seed: int = 0,
    model_name: str = "",
) -> AttentionResult:
    """The attention probabilities of every layer and head on ``text_or_ids``, and per-head statistics.

    Args:
        model: a ``GPT2`` (any device; the forward runs in eval mode, without dropout, and the
            model's training flag is restored afterwards).
        tokenizer: turns text into ids and ids into token text; ``None`` when passing ids (tokens
            are then shown as ``#id``).
        text_or_ids: a string, or token ids (list, (T,) or (1, T) tensor), at most ``block_size`` long.
        induction: also measure every head's induction score on ``induction_batch`` sequences of
            ``induction_period`` random tokens repeated twice (default period: min(50, block_size // 2)).
        seed: for those random tokens, so scores are reproducible.

    Returns:
        an ``AttentionResult`` with ``tokens``, ``probs`` (L, H, T, T) and ``stats``.
    """
    if isinstance(tokenizer, (list, tuple, torch.Tensor)) and isinstance(text_or_ids, str) and text_or_ids == "":
        tokenizer, text_or_ids = None, tokenizer  # attention(model, ids): ids in the tokenizer's place
    ids = token_ids(tokenizer, text_or_ids, model, min_tokens=2)
    cfg = model.config
    was_training = model.training
    model.eval()
    try:
        probs = capture(model, torch.tensor([ids]))[0]  # (L, H, T, T)
        ind_probs, period = None, None
        if induction:
            period = induction_period or min(50, cfg.block_size // 2)
            if not 1 <= period <= cfg.block_size // 2:
                raise InputError(f"induction_period must be in 1..{cfg.block_size // 2}, got {period}")
            exclude = [tokenizer.eot_token] if tokenizer is not None and hasattr(tokenizer, "eot_token") else []
            rep = repeated_random_tokens(cfg.vocab_size, period, induction_batch, seed, exclude)  # (B, 2P)
            ind_probs = capture(model, rep)  # (B, L, H, 2P, 2P)
    finally:
        model.train(was_training)
    stats = HeadStats.from_probs(probs, ind_probs, period)
    return AttentionResult(ids=ids, tokens=token_texts(tokenizer, ids), probs=probs, stats=stats, model_name=model_name)


__all__ = [
    "AttentionResult",
    "HeadStats",
    "attention",
    "capture",
    "visible",
    "token_texts",
    "entropy",
    "distance",
    "sink_share",
    "prev_token_score",
    "self_token_score",
    "induction_score",
    "repeated_random_tokens",
    "head_labels",
    "LABEL_RULES",
]
