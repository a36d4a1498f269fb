"""Vocabulary padding: a faster shape for the embedding and the LM head, invisible outside training."""

from __future__ import annotations

from typing import Any, cast

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
    view.load_state_dict(real_vocab_state(model.state_dict(keep_vars=True), real_vocab), assign=True)
    view.tie_weights()
    return view.train(model.training)


# -- state dicts between the padded vocabulary (inside a run) and the real one (in every file) ---------

MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's per-parameter state with the parameter's shape


def real_vocab_state(state: dict[str, torch.Tensor], vocab: int) -> dict[str, torch.Tensor]:
    """``state`` with the vocabulary tensors (``VOCAB_KEYS``) cut to their first ``vocab`` rows (views)."""
    return {k: (v[:vocab] if k in VOCAB_KEYS else v) for k, v in state.items()}


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """``t`` (V, ...) with zero rows appended up to ``rows``."""
    return torch.cat([t, t.new_zeros(rows - t.size(0), *t.shape[1:])]) if t.size(0) != rows else t


def padded_state(state: dict[str, torch.Tensor], padded: int) -> dict[str, torch.Tensor]:
    """``state`` (real vocabulary) with zero rows appended to the vocabulary tensors up to ``padded``."""
    return {k: (_pad_rows(v, padded) if k in VOCAB_KEYS else v) for k, v in state.items()}


def real_vocab_moments(state: dict[str, Any], index: int | None, vocab: int) -> dict[str, Any]:
    """An optimizer state dict whose parameter ``index`` (the padded embedding; None: not optimized)
    has its moments cut to ``vocab`` rows. A new dict: ``state_dict()`` hands out the optimizer's own
    per-parameter dicts, which must never be edited."""
    if index not in state["state"]:
        return state
    slot = {key: (value[:vocab] if key in MOMENTS else value) for key, value in state["state"][index].items()}
    return {**state, "state": {**state["state"], index: slot}}


def pad_moments(state: dict[str, Any], index: int | None, padded: int) -> None:
    """Pad, in ``state`` itself (one read from a checkpoint), parameter ``index``'s moments to ``padded`` rows."""
    slot = state["state"].get(index, {})
    for key in MOMENTS:
        if key in slot:
            slot[key] = _pad_rows(slot[key], padded)


__all__ = ["VOCAB_KEYS", "pad_vocabulary", "real_vocab_model", "real_vocab_state", "padded_state", "real_vocab_moments",
           "pad_moments"]
