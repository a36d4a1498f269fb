"""Vocabulary padding: a faster shape for the embedding and the LM head, invisible outside training."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn

from ..classify import empty_like
from ..lora import apply_lora, lora_settings
from ..model import GPT2

VOCAB_KEYS = ("transformer.wte.weight", "lm_head.weight")  # the tensors with a vocabulary dimension


def pad_vocabulary(model: GPT2, multiple: int) -> int:
    """Give ``model`` extra, all-zero vocabulary rows up to a multiple of ``multiple``; return the real size.

    Matrix products with a (V, C) operand run faster when V is a multiple of 64 (50257 -> 50304).
    The extra rows are never looked up (no id reaches them) and the loss reads only the real
    logits, so their gradient is zero and they stay zero: the network computes the same function.
    """
    real = model.config.vocab_size
    padded = -(-real // multiple) * multiple
    if padded == real:
        return real
    embedding = cast(nn.Embedding, model.get_submodule("transformer.wte"))
    head = cast(nn.Linear, model.get_submodule("lm_head"))
    wte = model.get_parameter("transformer.wte.weight")  # (V, C)
    padded_wte = torch.zeros(padded, wte.size(1), dtype=wte.dtype, device=wte.device)  # (V', C)
    with torch.no_grad():
        padded_wte[:real] = wte
    embedding.weight = nn.Parameter(padded_wte)
    if model.config.tie_word_embeddings:
        head.weight = embedding.weight
    else:
        padded_head = torch.zeros(padded, wte.size(1), dtype=wte.dtype, device=wte.device)  # (V', C)
        with torch.no_grad():
            padded_head[:real] = model.get_parameter("lm_head.weight")
        head.weight = nn.Parameter(padded_head)
    embedding.num_embeddings = padded
    head.out_features = padded
    model.config = model.config.replace(vocab_size=padded)
    return real


def real_vocab_model(model: GPT2, real_vocab: int) -> GPT2:
    """The model with its real vocabulary: ``model`` itself, or, when padded, a second ``GPT2``
    whose parameters are *views* of ``model``'s (no copy; the padding rows left out), LoRA adapters included."""
    if model.config.vocab_size == real_vocab:
        return model
    with torch.device("meta"):
        view = empty_like(model, model.config.replace(vocab_size=real_vocab))  # a classifier keeps its head
    adapters = lora_settings(model)
    if adapters is not None:
        apply_lora(view, **adapters)  # the same module tree, so the state below fits it
    state = {k: (v[:real_vocab] if k in VOCAB_KEYS else v) for k, v in model.state_dict(keep_vars=True).items()}
    view.load_state_dict(state, assign=True)
    view.tie_weights()
    return view.train(model.training)


__all__ = ["VOCAB_KEYS", "pad_vocabulary", "real_vocab_model"]
