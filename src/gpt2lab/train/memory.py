"""Trading compute for memory: activation checkpointing (recompute each block in backward).

A block's backward needs what its forward computed (the attention weights' inputs, the MLP's
4C-wide hidden layer, every LayerNorm's statistics). Kept for all L blocks at once, those saved
activations are most of a training step's memory. ``checkpoint_blocks`` keeps only each block's
input instead and runs the block's forward a second time during backward, through
``torch.utils.checkpoint`` (non-reentrant, so it composes with autocast, DDP, FSDP2 and
``torch.compile``). About one more forward pass of compute; the same numbers to the last bit
(dropout replays its random draws: checkpoint restores the RNG state before recomputing a block that
draws any; a block without dropout leaves the generators alone, which a CUDA graph recording needs).
"""

from __future__ import annotations

import types

import torch
from torch.utils.checkpoint import checkpoint

from ..model import GPT2, Block, KVCache


def _recomputed_forward(block: Block, x: torch.Tensor, mask: torch.Tensor | None, kv_cache: KVCache | None = None) -> torch.Tensor:
    """``Block.forward``, checkpointed while training: evaluation and generation (no grad, or a
    KV cache that the recomputation would append to twice) run the block as usual."""
    forward = type(block).forward
    if block.training and torch.is_grad_enabled() and kv_cache is None:
        # the RNG state is kept (and put back for the recomputation) only when the block draws random numbers:
        # reading a GPU generator's state is not allowed while a CUDA graph records (train --cuda-graph)
        return checkpoint(forward, block, x, mask, kv_cache, use_reentrant=False, preserve_rng_state=draws_random_numbers(block))  # (B, T, C)
    return forward(block, x, mask, kv_cache)  # (B, T, C)


def draws_random_numbers(block: torch.nn.Module) -> bool:
    """Whether ``block``'s training forward draws random numbers: a dropout (on attention weights,
    residual branches or LoRA inputs) with p > 0."""
    return any((isinstance(m, torch.nn.Dropout) and m.p > 0) or getattr(m, "dropout_p", 0.0) > 0 for m in block.modules())


def checkpoint_blocks(model: GPT2) -> GPT2:
    """Recompute every block of ``model`` in backward instead of storing its activations.

    Each block's ``forward`` becomes a method bound to that block (no wrapper module): parameter
    names, ``state_dict`` keys, checkpoints and ``save_pretrained`` stay exactly as they were, and
    a ``copy.deepcopy`` rebinds the method to the copy's own block. Returns ``model``.
    """
    for block in model.transformer.h:
        block.forward = types.MethodType(_recomputed_forward, block)  # type: ignore[method-assign]
    return model


def saved_activation_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """The bytes autograd saves for backward during one forward of ``model`` on ``ids`` (B, T):
    the activation memory a training step holds at its peak, measured without a clock.
    (Parameters count too, once per use: they are the same with or without recomputation.)"""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids)
    return total


__all__ = ["checkpoint_blocks", "draws_random_numbers", "saved_activation_bytes"]
