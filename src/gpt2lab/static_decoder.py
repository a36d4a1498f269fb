"""A decode step of fixed shapes, for ``torch.compile`` with CUDA graphs.

The ordinary decode step (``model(token, kv_cache=cache)``) attends to a cache slice that grows by
one column a step, so its shapes change every step and a CUDA graph cannot be recorded once.
``StaticDecoder`` attends to the whole cache with a mask and writes at a *tensor* position, so
every tensor keeps its shape; ``generate(..., static_cache=True)`` uses it as is, and
``generate(..., compile=True)`` uses it compiled (``mode="reduce-overhead"``: CUDA graphs on GPU).
It gives the same tokens as the ordinary step.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn as nn

from .model import GPT2, KVCache


class _StaticWrite:
    """Stands in for a KVCache inside the blocks: writes the new key/value at a *tensor* position
    and returns the whole cache, so no shape depends on how many positions are filled."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, write_pos: torch.Tensor) -> None:
        self.k, self.v, self.write_pos = k, v, write_pos

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k[layer].index_copy_(2, self.write_pos, k_new)  # (B, H, max_len, D), column write_pos
        self.v[layer].index_copy_(2, self.write_pos, v_new)
        return self.k[layer], self.v[layer]  # (B, H, max_len, D): masked below, not sliced


class StaticDecoder(nn.Module):
    """One decode step whose every tensor has the same shape at every step.

    The cache (shared with a ``KVCache``, registered here as buffers so a compiler treats it as
    state) is attended in full, with a mask that lets the query see filled, non-padding columns
    only; the new key/value are written at ``write_pos`` (a tensor). Nothing depends on a Python
    integer that changes, so ``torch.compile(decoder, mode="reduce-overhead", fullgraph=True)``
    records it once as a CUDA graph. On CPU it computes what the ordinary cached step computes.
    """

    k: torch.Tensor  # buffers, declared for the type checker (register_buffer sets them)
    v: torch.Tensor
    key_valid: torch.Tensor
    columns: torch.Tensor

    def __init__(self, model: GPT2, cache: KVCache) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("k", cache.k, persistent=False)  # (L, B, H, max_len, D), same storage
        self.register_buffer("v", cache.v, persistent=False)
        self.register_buffer("key_valid", torch.ones(cache.batch_size, cache.max_len, dtype=torch.bool, device=cache.k.device), persistent=False)
        self.register_buffer("columns", torch.arange(cache.max_len, device=cache.k.device), persistent=False)

    def set_padding(self, attention_mask: torch.Tensor | None) -> None:
        """Columns (B, max_len) that hold real tokens: the prompt's mask, then ones."""
        self.key_valid.fill_(True)
        if attention_mask is not None:
            self.key_valid[:, : attention_mask.size(1)].copy_(attention_mask.bool())

    def forward(self, idx: torch.Tensor, position_ids: torch.Tensor, write_pos: torch.Tensor) -> torch.Tensor:
        """idx (B, 1), position_ids (B, 1), write_pos (1,) the cache column -> logits (B, V)."""
        tr: Any = self.model.transformer  # a ModuleDict: its parts are looked up by name at run time
        x = tr.wte(idx) + tr.wpe(position_ids)  # (B, 1, C)
        allowed = (self.columns <= write_pos) & self.key_valid  # (B, max_len)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        blocked = torch.tensor(torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device)
        mask = torch.where(allowed, zero, blocked)[:, None, None, :]  # (B, 1, 1, max_len)
        cache = _StaticWrite(self.k, self.v, write_pos)
        for block in tr.h:
            x = block(x, mask, kv_cache=cache)  # (B, 1, C)
        x = tr.ln_f(x)  # (B, 1, C)
        return self.model.lm_head(x)[:, -1, :]  # (B, V)


# compiled decoders per model and (batch, length, dtype, device), with their caches: compiling is slow
_COMPILED: weakref.WeakKeyDictionary[GPT2, dict[tuple, tuple[KVCache, StaticDecoder, Any]]] = weakref.WeakKeyDictionary()


def static_decoder(model: GPT2, batch_size: int, max_len: int, compile: bool) -> tuple[KVCache, StaticDecoder, Any]:
    """A cache, the ``StaticDecoder`` on it, and the step to call (the decoder itself, or its compiled form).

    Compiled decoders are kept per model and (batch, length, dtype, device) with their caches, and
    reset for reuse: compiling takes far longer than a call."""
    if not compile:
        cache = model.new_kv_cache(batch_size, max_len)
        decoder = StaticDecoder(model, cache)
        return cache, decoder, decoder
    key = (batch_size, max_len, model.dtype, str(model.device))
    per_model = _COMPILED.setdefault(model, {})
    if key not in per_model:
        cache = model.new_kv_cache(batch_size, max_len)
        decoder = StaticDecoder(model, cache)
        mode = "reduce-overhead" if model.device.type == "cuda" else None  # CUDA graphs on GPU
        per_model[key] = (cache, decoder, torch.compile(decoder, mode=mode, fullgraph=True))
    cache, decoder, step = per_model[key]
    cache.reset()
    return cache, decoder, step
