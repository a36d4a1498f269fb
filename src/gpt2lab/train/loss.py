"""The training loss: next-token cross-entropy over the real vocabulary, two ways.

* ``lm_loss(logits, targets, vocab)``: from the logits, with a backward that reuses the logits' memory
  and, on a GPU, no fp32 copy of bf16 logits (the eager path: a small model's largest tensors).
  Inside ``torch.compile`` it is plain ``F.cross_entropy``, which the compiler fuses with the head.
* ``chunked_lm_loss(hidden, weight, targets, vocab)``: the LM head and the loss together, a chunk of
  tokens at a time, so the whole (N, V) logits never exist, in fp32 or otherwise; each chunk's
  gradients are made while its logits exist, so the head's products still run once each. At GPT-2's
  vocabulary and 16 x 1024 tokens the logits are 3.3 GB in fp32 (1.6 GB in bf16); here at most
  ``chunk`` rows of them are alive. The trainer takes it when asked (``train --chunked-loss``).
* ``LanguageModelLoss``: a model and one of the two as a single module, ``(x, y) -> loss``: what the
  trainer compiles and wraps in DDP.

Targets equal to ``IGNORE_INDEX`` (-100: the prompt positions of instruction data) take no part:
the loss is the mean over the other positions, and a batch with none at all has loss 0 and no
gradient (rather than 0/0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..batches import IGNORE_INDEX
from ..model import GPT2, next_token_loss

ELEMENTS_AT_ONCE = 1 << 27  # logits a half-precision block turns into fp32 at once: 512 MB (2,670 rows of GPT-2's)


class _CrossEntropyInPlace(torch.autograd.Function):
    """Mean cross-entropy over the first ``vocab`` columns, whose backward overwrites the logits
    with their gradient.

    F.cross_entropy keeps log_softmax's (N, V) output and, in backward, allocates a zeroed (N, V)
    tensor and then another for the gradient. With GPT-2's vocabulary these are the largest tensors
    of a small model's step (N x 50257 floats: 200 MB for 1024 tokens) and on a CPU each fresh one
    costs page faults to allocate. Here forward keeps only the (N,) log-sum-exp, and backward turns
    the logits, which nothing else needs any more, into softmax - one_hot in place.

    Logits in bf16 or fp16 (autocast's products) get their softmax in fp32 all the same, a block of
    rows at a time (``ELEMENTS_AT_ONCE``): the log-sum-exp in forward, and in backward each block's
    gradient, rounded once to the logits' dtype, which is where F.cross_entropy(logits.float())
    rounds it on its way back. So neither an fp32 copy of the whole logits nor its log-softmax ever
    exists (16 x 1024 tokens: 3.3 GB each). Padding columns (a padded vocabulary) get zero gradient.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, vocab: int) -> torch.Tensor:  # logits (N, V'), targets (N,)
        counted = targets != IGNORE_INDEX  # (N,)
        safe = targets.clamp(min=0)  # (N,): any valid index where ignored; those rows are zeroed below
        n = counted.sum().clamp(min=1)  # ()
        rows = max(1, ELEMENTS_AT_ONCE // logits.size(1))
        lse = torch.cat([torch.logsumexp(block[:, :vocab].float(), dim=1) for block in logits.split(rows)])  # (N,) fp32
        loss = ((lse - logits.gather(1, safe[:, None]).squeeze(1).float()) * counted).sum() / n  # ()
        ctx.vocab, ctx.rows = vocab, rows
        ctx.save_for_backward(logits, safe, lse, counted, n)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, safe, lse, counted, n = ctx.saved_tensors
        vocab, rows = ctx.vocab, ctx.rows
        scale = counted / n * grad  # (N,): the mean's 1/n, and 0 for ignored rows
        for start in range(0, logits.size(0), rows):
            block = logits[start : start + rows]  # (r, V'): a view of the logits
            at = slice(start, start + rows)
            real = block[:, :vocab]  # (r, V)
            # softmax, in fp32: in the logits' own memory when they are fp32, else a block of its own
            g = real.sub_(lse[at, None]) if real.dtype == torch.float32 else torch.sub(real, lse[at, None])
            g.exp_()
            g[torch.arange(g.size(0), device=g.device), safe[at]] -= 1.0  # - one_hot(targets)
            torch.mul(g, scale[at, None], out=real)  # rounded once to the logits' dtype, into their memory
            block[:, vocab:].zero_()  # padding columns
        return logits, None, None


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, vocab: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the real vocabulary and the counted targets (not
    ``IGNORE_INDEX``). logits (B, T, V'), targets (B, T).

    A training step's logits are used by the loss alone, so outside ``torch.compile`` its backward
    reuses their memory (``_CrossEntropyInPlace``); compiled, plain ``F.cross_entropy`` lets the
    compiler fuse the softmax with the head into fewer passes. Half-precision logits take the
    in-place path on a GPU only: on a CPU each fresh fp32 block costs page faults, and PyTorch's
    fused log-softmax over one fp32 copy was faster there (1024 x 50257 bf16 logits, forward and
    backward: 261 ms against 329 ms)."""
    in_place = logits.dtype == torch.float32 or (logits.is_cuda and logits.dtype in (torch.bfloat16, torch.float16))
    if in_place and logits.requires_grad and logits.is_contiguous() and not torch.compiler.is_compiling():
        return _CrossEntropyInPlace.apply(logits.view(-1, logits.size(-1)), targets.reshape(-1), vocab)
    return next_token_loss(logits, targets, vocab)  # the model's own formula (padding columns sliced off)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight[:vocab].T`` against ``targets``, ``chunk`` rows at a time.

    The gradients are made in forward, while each chunk's logits exist anyway: softmax - one_hot
    is the loss's gradient with respect to the logits, and two products carry it back to ``hidden``
    and ``weight``. So the head's three products run once each, as in the plain path, yet no more
    than ``chunk`` rows of logits are ever alive, and backward only scales the two gradients it
    kept. The products run in ``compute_dtype`` (autocast's, when it is on), the softmax in fp32,
    the weight's gradient adds up in fp32.

    Written without in-place operations on purpose: an in-place version (``logits.sub_().exp_()``,
    slices of preallocated gradients) gave the right gradients eagerly and compiled on a CPU, but
    all-zero gradients under ``torch.compile`` on an H200 (torch 2.11; ``aot_eager`` too, so in the
    tracing, not the kernels). This one gave the right ones with every backend there.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int, chunk: int,
                compute_dtype: torch.dtype, with_grad: bool) -> torch.Tensor:  # hidden (N, C), weight (V', C), targets (N,)
        counted = targets != IGNORE_INDEX  # (N,)
        safe = targets.clamp(min=0)  # (N,): any valid index where ignored; those rows count 0
        scale = counted / counted.sum().clamp(min=1)  # (N,): the mean's 1/n, and 0 for ignored rows
        head = weight[:vocab].to(compute_dtype)  # (V, C): padding rows take no part
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)  # ()
        grad_hidden: list[torch.Tensor] = []  # (n_c, C) per chunk
        grad_head = torch.zeros(head.shape, device=weight.device, dtype=torch.float32)  # (V, C): summed over chunks
        for i in range(0, hidden.size(0), chunk):
            h = hidden[i : i + chunk].to(compute_dtype)  # (n_c, C)
            logits = (h @ head.t()).float()  # (n_c, V)
            lse = torch.logsumexp(logits, dim=1)  # (n_c,)
            picked = logits.gather(1, safe[i : i + chunk, None]).squeeze(1)  # (n_c,): the target's logit
            total = total + ((lse - picked) * scale[i : i + chunk]).sum()
            if with_grad:
                g = torch.exp(logits - lse[:, None])  # (n_c, V): softmax
                g = g.scatter_add(1, safe[i : i + chunk, None], torch.full_like(picked[:, None], -1.0))  # - one_hot(targets)
                g = (g * scale[i : i + chunk, None]).to(compute_dtype)  # (n_c, V)
                grad_hidden.append(g @ head)  # (n_c, C)
                grad_head = grad_head + (g.t() @ h).float()  # (V, C)
        if with_grad:
            padding = grad_head.new_zeros(weight.size(0) - vocab, weight.size(1))  # (V' - V, C): rows that made no logit
            ctx.save_for_backward(torch.cat(grad_hidden).to(hidden.dtype), torch.cat([grad_head, padding]).to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors  # d loss / d hidden (N, C), d loss / d weight (V', C)
        return grad_hidden * grad, grad_weight * grad, None, None, None, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab: int,
                    chunk: int = 4096) -> torch.Tensor:
    """The LM head and its mean cross-entropy in one, never holding more than ``chunk`` rows of logits.

    Equal (to float rounding) to ``lm_loss(hidden @ weight.T, targets, vocab)``, gradients included.
    hidden (B, T, C): the final LayerNorm's output; weight (V', C): the LM head (the token embedding
    when tied), V' >= vocab (padding rows get zero gradient); targets (B, T), ``IGNORE_INDEX`` where
    nothing is to be predicted. Under autocast the products run in its dtype, as ``lm_head`` would.
    """
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    C = hidden.size(-1)
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)  # evaluation makes no gradients
    return _ChunkedLinearCrossEntropy.apply(hidden.reshape(-1, C), weight, targets.reshape(-1), vocab, chunk, dtype, with_grad)


class LanguageModelLoss(nn.Module):
    """A language model and its training loss as one module: ``(x, y) -> loss``.

    The trainer compiles (and DDP wraps) this rather than the model alone, so that a compiled step
    holds the loss in its graph: there the head's output, the fp32 softmax and its gradient fuse into
    a few kernels, where a loss outside the graph would make separate passes over the (N, V) logits.
    ``chunked``: the head and the loss a chunk of positions at a time (``chunked_lm_loss``), so the
    (N, V) logits never exist.
    """

    def __init__(self, model: GPT2, vocab: int, chunked: bool = False) -> None:
        super().__init__()
        self.model = model
        self.vocab = vocab
        self.chunked = chunked

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # x, y (B, T) -> ()
        if self.chunked:
            hidden = self.model(x, head=False)  # (B, T, C): the final LayerNorm's output
            return chunked_lm_loss(hidden, self.model.lm_head.weight, y, self.vocab)
        return lm_loss(self.model(x), y, self.vocab)  # logits (B, T, V')


__all__ = ["lm_loss", "chunked_lm_loss", "LanguageModelLoss"]
