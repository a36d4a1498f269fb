"""The training loss: next-token cross-entropy over the real vocabulary, two ways.

* ``lm_loss(logits, targets, vocab)``: from the logits, with a backward that reuses the logits' memory
  (the CPU path: the LM head's three products are most of a small model's step, done once each).
* ``chunked_lm_loss(hidden, weight, targets, vocab)``: the LM head and the loss together, a chunk of
  tokens at a time, so the whole (N, V) logits never exist, in fp32 or otherwise; backward computes
  each chunk's logits again (one more head product per step) instead of keeping them. At GPT-2's
  vocabulary and 16 x 1024 tokens the logits are 3.3 GB in fp32 (plus a bf16 copy under autocast);
  here at most ``chunk`` rows of them are alive. The trainer uses it when asked (``trainer.chunked_loss =
  True``, where ``trainer.chunked_loss_fits``: CUDA, a large vocabulary, a plain tied head), where memory is what
  limits the batch; not by default until its speed on a GPU is measured.

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


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight[:vocab].T`` against ``targets``, ``chunk`` rows at a time.

    forward keeps the inputs and each row's log-sum-exp (N floats); backward recomputes a chunk's
    logits, turns them into softmax - one_hot in place, and multiplies back into the two gradients.
    The products run in ``compute_dtype`` (autocast's, when it is on), the softmax in fp32.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int, chunk: int,
                compute_dtype: torch.dtype) -> torch.Tensor:  # hidden (N, C), weight (V', C), targets (N,)
        counted = targets != IGNORE_INDEX  # (N,)
        safe = targets.clamp(min=0)  # (N,): any valid index where ignored; those rows count 0
        n = counted.sum().clamp(min=1)  # ()
        head = weight[:vocab].to(compute_dtype)  # (V, C): padding rows take no part
        lse = torch.empty(hidden.size(0), device=hidden.device, dtype=torch.float32)  # (N,)
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)  # ()
        for i in range(0, hidden.size(0), chunk):
            logits = (hidden[i : i + chunk].to(compute_dtype) @ head.t()).float()  # (n_c, V)
            lse[i : i + chunk] = torch.logsumexp(logits, dim=1)
            picked = logits.gather(1, safe[i : i + chunk, None]).squeeze(1)  # (n_c,)
            total += ((lse[i : i + chunk] - picked) * counted[i : i + chunk]).sum()
        ctx.save_for_backward(hidden, weight, safe, counted, lse, n)
        ctx.vocab, ctx.chunk, ctx.compute_dtype = vocab, chunk, compute_dtype
        return total / n

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, safe, counted, lse, n = ctx.saved_tensors
        vocab, chunk, dtype = ctx.vocab, ctx.chunk, ctx.compute_dtype
        head = weight[:vocab].to(dtype)  # (V, C)
        scale = counted / n * grad  # (N,): the mean's 1/n, and 0 for ignored rows
        grad_hidden = torch.empty_like(hidden)  # (N, C)
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)  # (V', C)
        for i in range(0, hidden.size(0), chunk):
            h = hidden[i : i + chunk].to(dtype)  # (n_c, C)
            g = (h @ head.t()).float().sub_(lse[i : i + chunk, None]).exp_()  # (n_c, V): softmax
            g[torch.arange(g.size(0), device=g.device), safe[i : i + chunk]] -= 1.0  # - one_hot(targets)
            g = g.mul_(scale[i : i + chunk, None]).to(dtype)  # (n_c, V)
            grad_hidden[i : i + chunk] = g @ head  # (n_c, C)
            grad_weight[:vocab] += (g.t() @ h).float()  # (V, C)
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int,
                    chunk: int = 2048) -> torch.Tensor:
    """The LM head and its mean cross-entropy in one, never holding more than ``chunk`` rows of logits.

    Equal (to float rounding) to ``lm_loss(hidden @ weight.T, targets, vocab)``, gradients included.
    hidden (B, T, C): the final LayerNorm's output; weight (V', C): the LM head (the token embedding
    when tied), V' >= vocab (padding rows get zero gradient); targets (B, T), ``IGNORE_INDEX`` where
    nothing is to be predicted. Under autocast the products run in its dtype, as ``lm_head`` would.
    """
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    C = hidden.size(-1)
    return _ChunkedLinearCrossEntropy.apply(hidden.reshape(-1, C), weight, targets.reshape(-1), vocab, chunk, dtype)


__all__ = ["lm_loss", "chunked_lm_loss"]
