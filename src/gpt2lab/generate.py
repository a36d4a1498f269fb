"""Decoding: turn next-token logits into new tokens, one step at a time, on the KV cache.

The prompt runs through the model once (the "prefill") and fills the cache; each further step
feeds only the newest token. ``temperature=0`` picks the most likely token (greedy decoding);
otherwise the logits are divided by the temperature, optionally restricted to the ``top_k`` most
likely tokens and to the smallest set whose probability reaches ``top_p``, and sampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import GPT2


def filter_logits(logits: torch.Tensor, *, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on logits (B, V); removed tokens get -inf."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        # drop a token when the ones before it already reach top_p; the first always stays
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p  # (B, V)
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model: GPT2,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Continue every row of ``idx`` (B, T) by ``max_new_tokens`` tokens; returns (B, T + new).

    The prompt is cropped to its last ``block_size`` tokens if it is longer than the context.
    When the cache is full, the window slides: the last half-context is run again as a new prefill.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    was_training = model.training
    model.eval()
    generator = None
    if seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(seed)
    block_size = model.config.block_size
    out = idx
    cache = model.new_kv_cache(idx.size(0))
    context = idx[:, -block_size:]  # (B, <= block_size)
    try:
        for _ in range(max_new_tokens):
            if cache.pos + context.size(1) > block_size:
                # no room: start a fresh cache from the most recent half-context
                cache.reset()
                context = out[:, -(block_size // 2 or 1) :]
            logits = model(context, kv_cache=cache, last_logits_only=True)[:, -1, :].float()  # (B, V)
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                probs = F.softmax(filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p), dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            out = torch.cat([out, next_id], dim=1)  # (B, T + i + 1)
            context = next_id
    finally:
        model.train(was_training)
    return out
