"""Tokens for people: ids from text or ids, each token's exact text, whitespace made visible.

One place for what every looking-inside view (attention, trace, lens, patching, attribution) and the
command line need, so a token looks the same in the terminal, a PNG and a page. torch is imported
where a function needs it: ``gpt2lab tokenizer encode`` shows tokens without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    import torch

    from .model import GPT2

# Whitespace and invisible characters drawn as symbols, so " the" and "the" look different.
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d"}  # ␣ ↵ → ␍


def visible(text: str) -> str:
    """``text`` with spaces, newlines, tabs and other control characters made visible.

    ``" the"`` -> ``"␣the"``, ``"\\n"`` -> ``"↵"``, a NUL byte -> ``"\\x00"``. Used by the terminal
    views, the PNG labels and the HTML pages alike.
    """
    out = []
    for ch in text:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029\u200b\ufeff":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) or "\u2205"  # ∅: an empty token still needs something to hover


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The exact text of each token, one string per id.

    A byte-level BPE token can hold part of a UTF-8 character (an emoji is often split over 2-3 tokens);
    such bytes are shown as ``\\xNN`` escapes rather than as a replacement character, so nothing is
    hidden. Without a tokenizer, tokens are shown by id (``#464``); an id the vocabulary has no text
    for (a padded embedding row) likewise.
    """
    from .streaming import token_bytes_fn

    if tokenizer is None:
        return [f"#{i}" for i in ids]
    token_bytes = token_bytes_fn(tokenizer)
    texts = []
    for i in ids:
        try:
            texts.append(token_bytes(int(i)).decode("utf-8", errors="backslashreplace"))
        except (KeyError, ValueError, IndexError):
            texts.append(f"#{i}")
    return texts


def token_ids(
    tokenizer: Any,
    text_or_ids: str | Sequence[int] | torch.Tensor,
    model: GPT2 | None = None,
    *,
    min_tokens: int = 1,
) -> list[int]:
    """One sequence of ids from text (``<|endoftext|>`` in it means the token) or from ids (a list,
    a (T,) or (1, T) tensor); with ``model``, checked against its context and vocabulary."""
    import torch

    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise InputError("text needs a tokenizer; pass one, or pass token ids instead")
        try:
            ids = [int(i) for i in tokenizer.encode(text_or_ids, allowed_special="all")]
        except TypeError:  # a tokenizer without tiktoken's allowed_special
            ids = [int(i) for i in tokenizer.encode(text_or_ids)]
    elif isinstance(text_or_ids, torch.Tensor):
        t = text_or_ids[0] if text_or_ids.dim() == 2 and text_or_ids.size(0) == 1 else text_or_ids
        if t.dim() != 1:
            raise InputError(f"token ids must be one sequence (T,) or (1, T), got shape {tuple(text_or_ids.shape)}")
        ids = [int(i) for i in t.tolist()]
    else:
        ids = [int(i) for i in text_or_ids]
    if len(ids) < min_tokens:
        raise InputError(f"need at least {min_tokens} token{'s' if min_tokens > 1 else ''} to look at, got {len(ids)}")
    if model is not None:
        cfg = model.config
        if len(ids) > cfg.block_size:
            raise InputError(f"the input is {len(ids):,} tokens, more than the model's context of {cfg.block_size}: shorten it")
        bad = [i for i in ids if not 0 <= i < cfg.vocab_size]
        if bad:
            raise InputError(f"token id {bad[0]} is outside this model's vocabulary of {cfg.vocab_size:,}")
    return ids


__all__ = ["visible", "token_texts", "token_ids"]
