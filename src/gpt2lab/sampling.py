"""From next-token logits to a token: the settings, the logits processors and the choice.

The processors run in transformers' order, with transformers' formulas, so the same settings mean
the same thing in both libraries::

    repetition penalty -> temperature -> top-k -> top-p -> min-p -> softmax -> sample

``temperature=0`` is greedy: the argmax of the (repetition-penalised) logits. Every function here
works on one step's logits (B, V) and knows nothing of the model or the cache; the decoding loop
in ``generate.py`` calls ``process_logits`` and ``choose_tokens`` once per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import GenerationError

# ---------------------------------------------------------------------------------------------
# Settings, checked before any work
# ---------------------------------------------------------------------------------------------


def is_int(x: Any) -> bool:
    """An int, and not a bool (``True`` is an int to Python, not a count to a user)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class GenerationSettings:
    """How logits become tokens. Building one checks every field and raises ``GenerationError``
    with a message that says what is allowed.

    Attributes:
        temperature: divide the logits by this before sampling; 0 means greedy (argmax).
        top_k: keep only the k most likely tokens (ties with the k-th are kept, as in transformers).
        top_p: nucleus sampling: keep the smallest set of most likely tokens whose probability
            reaches p. 1.0 keeps everything.
        min_p: keep tokens whose probability is at least ``min_p`` times the top token's.
        repetition_penalty: CTRL's penalty on every token already in the row (prompt included):
            a positive logit is divided by it, a negative one multiplied. 1.0 is off.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if not is_real(t) or not math.isfinite(t) or t < 0:
            raise GenerationError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 1):
            raise GenerationError(f"top_k must be an integer >= 1 (or None to keep every token), got {self.top_k!r}")
        p = self.top_p
        if p is not None and (not is_real(p) or not 0.0 < p <= 1.0):
            raise GenerationError(f"top_p must be in (0, 1] (1 keeps every token), got {p!r}")
        m = self.min_p
        if m is not None and (not is_real(m) or not 0.0 <= m < 1.0):
            raise GenerationError(f"min_p must be in [0, 1) (0 keeps every token), got {m!r}")
        r = self.repetition_penalty
        if r is not None and (not is_real(r) or not math.isfinite(r) or r <= 0):
            raise GenerationError(f"repetition_penalty must be a finite number > 0 (1 = off, > 1 discourages repeats), got {r!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalises_repeats(self) -> bool:
        return self.repetition_penalty is not None and self.repetition_penalty != 1.0


# ---------------------------------------------------------------------------------------------
# Logits processors (transformers' order and formulas)
# ---------------------------------------------------------------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty on logits (B, V) for tokens marked in ``seen`` (B, V) bool.

    A seen token's logit moves towards "less likely" whatever its sign: x / penalty if x > 0,
    x * penalty if x < 0 (transformers' ``RepetitionPenaltyLogitsProcessor``).
    """
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)  # (B, V)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen (< 1) or flatten (> 1) the distribution: softmax(logits / T)."""
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th); the rest become -inf."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest logit
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches p.

    Written as transformers writes it: sort ascending, and drop a token while the probability of
    it and everything less likely is still <= 1 - p (so what stays above it is >= p... and the most
    likely token always stays).
    """
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)  # (B, V), least likely first
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    drop_sorted = cumulative <= (1 - p)  # (B, V)
    drop_sorted[..., -1:] = False  # the most likely token always stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens less likely than ``min_p`` times the most likely one (after temperature)."""
    probs = logits.softmax(dim=-1)  # (B, V)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))  # the top token is never below it


def process_logits(logits: torch.Tensor, settings: GenerationSettings, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Every processor ``settings`` asks for, in transformers' order, on float logits (B, V).

    ``seen`` (B, V) bool marks the tokens each row already holds (for the repetition penalty).
    With ``temperature=0`` only the repetition penalty runs: the others cannot change the argmax.
    """
    if settings.penalises_repeats:
        if seen is None:
            raise GenerationError("repetition_penalty needs the tokens seen so far")
        assert settings.repetition_penalty is not None  # penalises_repeats says it is set
        logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
    if settings.greedy:
        return logits
    if settings.temperature != 1.0:
        logits = apply_temperature(logits, settings.temperature)
    if settings.top_k is not None:
        logits = apply_top_k(logits, settings.top_k)
    if settings.top_p is not None and settings.top_p < 1.0:
        logits = apply_top_p(logits, settings.top_p)
    if settings.min_p is not None and settings.min_p > 0.0:
        logits = apply_min_p(logits, settings.min_p)
    return logits


def choose_tokens(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Processed logits (B, V) -> next ids (B,): argmax when greedy, else a draw from the softmax."""
    if settings.greedy:
        return logits.argmax(dim=-1)  # (B,)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


# ---------------------------------------------------------------------------------------------
# NaN and inf, noticed without waiting for the device
# ---------------------------------------------------------------------------------------------

NO_STEP = 2**62  # what a ``first_nonfinite`` tensor holds while every step's logits were finite


def note_nonfinite(logits: torch.Tensor, step: int | torch.Tensor, first_nonfinite: torch.Tensor) -> None:
    """Keep in ``first_nonfinite`` (1,) int64 the first step whose logits (B, V) hold a NaN or an inf.

    Everything stays on the device: asking "is it finite?" with ``bool(...)`` every step would make
    the host wait for the device every step. The decoding loop reads the one number where the host
    waits anyway (or every few steps). ``step`` is an int, or a (1,) tensor inside a compiled step.
    """
    finite = torch.isfinite(logits.sum(dim=-1)).all()  # (): one NaN or inf anywhere makes its row's sum non-finite
    first_nonfinite.clamp_(max=torch.where(finite, NO_STEP, step))  # (1,): the earliest bad step, or NO_STEP
