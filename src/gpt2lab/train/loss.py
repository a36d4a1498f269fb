"""The training loss: next-token cross-entropy over the real vocabulary, with a backward that
reuses the logits' memory.

Targets equal to ``IGNORE_INDEX`` (-100: the prompt positions of instruction data) take no part:
the loss is the mean over the other positions, and a batch with none at all has loss 0 and no
gradient (rather than 0/0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX


class _CrossEntropyInPlace(torch.autograd.Function):
    """Mean cross-entropy whose backward overwrites the logits with their gradient.

    F.cross_entropy keeps log_softmax's (N, V) output and, in backward, allocates a zeroed (N, V)
    tensor and then another for the gradient. With GPT-2's vocabulary these are the largest tensors
    of a small model's step (N x 50257 floats: 200 MB for 1024 tokens) and on a CPU each fresh one
    costs page faults to allocate. Here forward keeps only the (N,) log-sum-exp, and backward turns
    the logits, which nothing else needs any more, into softmax - one_hot in place.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # logits (N, V), targets (N,)
        counted = targets != IGNORE_INDEX  # (N,)
        safe = targets.clamp(min=0)  # (N,): any valid index where ignored; those rows are zeroed below
        n = counted.sum().clamp(min=1)  # ()
        lse = torch.logsumexp(logits, dim=1)  # (N,)
        loss = ((lse - logits.gather(1, safe[:, None]).squeeze(1)) * counted).sum() / n  # ()
        ctx.save_for_backward(logits, safe, lse, counted, n)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, safe, lse, counted, n = ctx.saved_tensors
        g = logits.sub_(lse[:, None]).exp_()  # (N, V): softmax, in the logits' own memory
        g[torch.arange(g.size(0), device=g.device), safe] -= 1.0  # - one_hot(targets)
        g.mul_((counted / n * grad)[:, None])  # the mean's 1/n, and 0 for ignored rows
        return g, None


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, vocab: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the real vocabulary and the counted targets (not
    ``IGNORE_INDEX``). logits (B, T, V'), targets (B, T)."""
    if logits.size(-1) == vocab and logits.dtype == torch.float32 and logits.requires_grad and logits.is_contiguous():
        # the training step's logits are used by the loss alone, so its backward may reuse their memory
        return _CrossEntropyInPlace.apply(logits.view(-1, vocab), targets.reshape(-1))
    if logits.size(-1) != vocab:
        logits = logits[..., :vocab]  # (B, T, V): padding columns take no part in the softmax
    n = (targets != IGNORE_INDEX).sum().clamp(min=1)  # ()
    return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum") / n


__all__ = ["lm_loss"]
