"""Activation steering: activation addition (ActAdd; Turner et al., 2023), a difference of two
prompts' residual streams added to a third prompt's, and the text with and without it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..tokens import token_ids
from .common import _as_batch, _inspecting, _namer, _single_token

if TYPE_CHECKING:
    from ..model import GPT2


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
        from ..views.interp import steering_html

        return steering_html(self)


def steer_text(model: GPT2, tokenizer: Any, steering: Steering, prompt: str, max_new_tokens: int = 40, *, samples: int = 1,
               seed: int = 0, top: int = 5, **settings: Any) -> SteeredText:
    """``prompt`` continued ``samples`` times without and with ``steering`` (``steering.prompt_ids``:
    after ``<|endoftext|>``), until ``<|endoftext|>`` or ``max_new_tokens``; ``settings`` are
    ``generate``'s (``temperature``, ``top_p``...). Sample i of both sides draws from ``seed + i``, so
    the two texts differ only by the steering."""
    from ..generate import generate

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


__all__ = ["Steering", "steering", "SteeredText", "steer_text"]
