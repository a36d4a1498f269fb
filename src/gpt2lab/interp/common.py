"""What every tool of ``gpt2lab.interp`` shares: the model in inspection mode, token ids checked
into a batch, the logit-difference metric, and token names."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .. import kernels
from ..errors import InputError
from ..tokens import token_texts

if TYPE_CHECKING:
    from ..model import GPT2

Metric = Callable[[torch.Tensor], "torch.Tensor | float"]


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


def logit_diff(answer: int, wrong: int | None = None, position: int = -1) -> Metric:
    """The metric patching usually reads: logit[answer] - logit[wrong] at ``position``, averaged over the batch."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        at = logits[:, position].float()  # (B, V)
        value = at[:, answer] - (at[:, wrong] if wrong is not None else 0.0)  # (B,)
        return value.mean()

    return metric


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


__all__ = ["Metric", "logit_diff"]
